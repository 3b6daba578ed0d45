"""Optics: the objective's parameters (`parameters`), Zernike polynomials (`zernike`) and the scalar PSF model
(`psf`). The first stage of the data flow: what a PSF looks like for given aberrations."""
from fiji_bridge.optics.parameters import Optics, defocus_per_wave_of_depth, defocus_to_z, z_to_defocus

__all__ = ["Optics", "defocus_per_wave_of_depth", "defocus_to_z", "z_to_defocus"]
