"""SemiBlind: calibration-free deconvolution of microscope images with spatially-variant blur."""
from .optics import Optics, defocus_to_z, z_to_defocus
from .pipeline import Deconvolution, default_optics, deconvolve
from .psf_map import PSFMap, estimate_psf_map
from .psf import psf_batch, zernike_psf
from .richardson_lucy import richardson_lucy
from .sv_convolution import SVConvolution, convolve_sv

__version__ = "0.1.0"

__all__ = [
    "Optics", "defocus_to_z", "z_to_defocus", "zernike_psf", "psf_batch",
    "convolve_sv", "SVConvolution", "richardson_lucy", "deconvolve", "Deconvolution", "default_optics",
    "estimate_psf_map", "PSFMap", "__version__",
]
