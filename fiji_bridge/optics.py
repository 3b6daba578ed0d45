"""Optical description of a widefield microscope and defocus <-> axial distance conversion."""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

#: sqrt(3): RMS normalisation of Noll's defocus term Z4 = sqrt(3) (2 rho^2 - 1).
_SQRT3 = math.sqrt(3.0)


@dataclass(frozen=True)
class Optics:
    """Imaging optics that determine the pupil and the PSF sampling.

    Parameters
    ----------
    na : float
        Numerical aperture of the objective, ``0 < na < n``.
    wavelength : float
        Emission wavelength in µm.
    pixel_size : float
        Pixel size in the object plane in µm (camera pixel / magnification).
    n : float
        Refractive index of the immersion medium (1.0 air, 1.33 water, 1.518 oil).
    """

    na: float
    wavelength: float
    pixel_size: float
    n: float = 1.0

    def __post_init__(self) -> None:
        for name in ("na", "wavelength", "pixel_size", "n"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"optics: {name} must be a positive finite number, got {value!r}")
        if self.na >= self.n:
            raise ValueError(f"optics: na ({self.na}) must be smaller than the refractive index n ({self.n})")
        if self.pixel_size > self.nyquist_pixel_size:
            warnings.warn(
                f"optics: pixel size {self.pixel_size} µm is coarser than Nyquist sampling "
                f"({self.nyquist_pixel_size:.4f} µm = wavelength / (4 NA)); PSFs will be aliased",
                stacklevel=3,
            )

    @property
    def cutoff_frequency(self) -> float:
        """Coherent cut-off frequency NA/λ of the pupil in cycles/µm."""
        return self.na / self.wavelength

    @property
    def nyquist_pixel_size(self) -> float:
        """Largest pixel size (µm) that samples the incoherent PSF without aliasing: λ / (4 NA)."""
        return self.wavelength / (4.0 * self.na)

    @property
    def airy_fwhm(self) -> float:
        """FWHM of the in-focus Airy disk in µm, 0.514 λ/NA."""
        return 0.514 * self.wavelength / self.na

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Optics":
        try:
            return cls(na=float(d["na"]), wavelength=float(d["wavelength"]),
                       pixel_size=float(d["pixel_size"]), n=float(d.get("n", 1.0)))
        except KeyError as exc:
            raise ValueError(f"optics: missing key {exc.args[0]!r}") from None

    def with_pixel_size(self, pixel_size: float) -> "Optics":
        return Optics(na=self.na, wavelength=self.wavelength, pixel_size=pixel_size, n=self.n)


def defocus_to_z(coefficient, optics: Optics):
    """Axial distance (µm) from the Noll Z4 defocus coefficient (waves RMS).

    Paraxial defocus of an axial shift ``dz`` adds the wavefront
    ``W(rho) = dz NA^2 rho^2 / (2 n λ)`` waves. Its Z4 component is
    ``c = dz NA^2 / (4 sqrt(3) n λ)``, hence ``dz = 4 sqrt(3) n λ c / NA^2``.
    The sign follows the coefficient; the paraxial formula underestimates the
    axial distance by a few per cent at NA/n > 0.7.
    """
    return coefficient * 4.0 * _SQRT3 * optics.n * optics.wavelength / optics.na**2


def z_to_defocus(dz, optics: Optics):
    """Noll Z4 defocus coefficient (waves RMS) of an axial distance ``dz`` (µm); inverse of `defocus_to_z`."""
    return dz * optics.na**2 / (4.0 * _SQRT3 * optics.n * optics.wavelength)
