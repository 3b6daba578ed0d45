"""SemiBlind: calibration-free deconvolution of microscope images with spatially-variant blur."""
from fiji_bridge.optics.parameters import Optics, defocus_to_z, z_to_defocus
from fiji_bridge.pipeline import Deconvolution, default_optics, deconvolve
from fiji_bridge.estimation.psf_map import PSFMap, estimate_psf_map
from fiji_bridge.optics.psf import psf_batch, zernike_psf
from fiji_bridge.restoration.richardson_lucy import richardson_lucy
from fiji_bridge.restoration.sv_convolution import SVConvolution, convolve_sv

__version__ = "0.1.0"

__all__ = [
    "Optics", "defocus_to_z", "z_to_defocus", "zernike_psf", "psf_batch",
    "convolve_sv", "SVConvolution", "richardson_lucy", "deconvolve", "Deconvolution", "default_optics",
    "estimate_psf_map", "PSFMap", "__version__",
]
