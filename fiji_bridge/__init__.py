"""SemiBlind: calibration-free deconvolution of microscope images with spatially-variant blur.

The public API is the names in ``__all__`` below, importable from ``fiji_bridge``; the subpackages hold the
stages (see "How the code is organised" in the README) and may change their internals. The ImageJ bridge's
API is `fiji_bridge.imagej` (``__all__`` there); the command line is ``semiblind`` (`fiji_bridge.cli`).
"""
from fiji_bridge.estimation.psf_map import PSFMap, estimate_psf_map
from fiji_bridge.io.map_file import load_psf_map
from fiji_bridge.io.tiff import LazyImage, read_image, write_imagej_tiff
from fiji_bridge.optics.parameters import Optics, defocus_to_z, z_to_defocus
from fiji_bridge.optics.psf import psf_batch, zernike_psf
from fiji_bridge.pipeline import Deconvolution, deconvolve, default_optics, process_file, write_psf_map
from fiji_bridge.restoration.richardson_lucy import richardson_lucy
from fiji_bridge.restoration.sv_convolution import SVConvolution, convolve_sv
from fiji_bridge.restoration.tiling import deconvolve_tiff, deconvolve_tiled
from fiji_bridge.settings import AUTO, RunSettings
from fiji_bridge.stacks import StackDeconvolution, deconvolve_stack

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "deconvolve_folder":        # imported on use: the batch engine loads Dask when it is installed
        from fiji_bridge.parallel.batch import deconvolve_folder
        return deconvolve_folder
    raise AttributeError(f"module 'fiji_bridge' has no attribute {name!r}")


__all__ = [
    # optics and PSFs
    "Optics", "defocus_to_z", "z_to_defocus", "zernike_psf", "psf_batch",
    # the PSF map
    "estimate_psf_map", "PSFMap", "load_psf_map", "write_psf_map",
    # restoration
    "convolve_sv", "SVConvolution", "richardson_lucy", "deconvolve_tiled", "deconvolve_tiff",
    # one run: settings, image, file, folder
    "RunSettings", "AUTO", "deconvolve", "Deconvolution", "default_optics", "process_file", "deconvolve_folder",
    # stacks: T, Z, C planes around YX
    "deconvolve_stack", "StackDeconvolution",
    # files
    "read_image", "write_imagej_tiff", "LazyImage",
    "__version__",
]
