"""Optical description of a widefield microscope and defocus <-> axial distance conversion."""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from fiji_bridge.validation import is_real

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
            # Python or NumPy real numbers (np.float32(0.8) is an NA), stored as float; bool is not a number
            if not is_real(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"optics: {name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.na >= self.n:
            raise ValueError(f"optics: na ({self.na}) must be smaller than the refractive index n ({self.n}); for an "
                             "immersion objective give n (1.333 water, 1.518 oil) or an objective preset such as "
                             "60x/1.4-oil")
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


#: Gauss–Legendre nodes and weights on [0, 1] for the Zernike projection of the defocus wavefront.
_NODES, _WEIGHTS = (lambda x, w: ((x + 1) / 2, w / 2))(*np.polynomial.legendre.leggauss(48))


def defocus_per_wave_of_depth(na: float, n: float) -> float:
    """Noll Z4 coefficient (waves RMS) per wave of axial shift ``n·dz/λ``, beyond the paraxial regime.

    An axial shift ``dz`` of the focal plane adds the wavefront ``W(ρ) = (n·dz/λ) √(1 − (NA·ρ/n)²)`` waves
    (exact for a perfect lens; Gibson–Lanni with matched indices). Its Z4 = √3 (2ρ² − 1) component is
    ``c = (n·dz/λ) · 2√3 ∫₀¹ √(1 − s²ρ²) (2ρ² − 1) ρ dρ`` with ``s = NA/n`` (returned as a positive number).
    For small ``s`` this is the paraxial ``s²/(4√3)``; at NA 0.75 in air it is 1.19× larger, so the paraxial
    depth ``4√3·n·λ·c/NA²`` is 19 % too large there.
    """
    s = float(na) / float(n)
    integrand = np.sqrt(1.0 - (s * _NODES) ** 2) * (2 * _NODES**2 - 1) * _NODES
    return float(-2.0 * _SQRT3 * np.sum(_WEIGHTS * integrand))


@lru_cache(maxsize=1)
def _depth_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(NA/n rows, projected coefficients, fitted/projected ratios) of ``models/defocus_depth.json``."""
    d = json.loads(resources.files("fiji_bridge.models").joinpath("defocus_depth.json").read_text())
    return (np.asarray(d["relative_na"]), np.asarray(d["projected_coefficient"]),
            np.asarray(d["fit_over_projection"]))


def _fit_ratio(fitted: np.ndarray, relative_na: float) -> np.ndarray:
    """``c_fit / c_projection`` at fitted coefficients |c| for one NA/n (table interpolated in NA/n, then in
    log c_fit; held constant beyond the table's ends)."""
    rows, coeffs, ratios = _depth_table()
    s = float(np.clip(relative_na, rows[0], rows[-1]))
    i = int(np.clip(np.searchsorted(rows, s) - 1, 0, len(rows) - 2))
    t = (s - rows[i]) / (rows[i + 1] - rows[i])
    log_c = np.log(np.maximum(np.abs(fitted), 1e-9))
    per_row = [np.interp(log_c, np.log(coeffs * ratios[j]), ratios[j]) for j in (i, i + 1)]
    return (1 - t) * per_row[0] + t * per_row[1]


def defocus_to_z(coefficient, optics: Optics):
    """Axial distance (µm) from the Noll Z4 defocus coefficient (waves RMS) the PSF map reports.

    A focal shift ``dz`` adds the exact defocus wavefront whose Z4 projection is ``c_p = n·dz·k(NA/n)/λ``
    (`defocus_per_wave_of_depth`); beyond the paraxial regime that wavefront also carries higher orders,
    and the Z4-only PSF that fits a real (vectorial) PSF best has a somewhat larger coefficient
    ``c = r·c_p``. ``r`` comes from ``models/defocus_depth.json`` (fits to `psfmodels`' vectorial
    Gibson–Lanni PSF, `training.depth_calibration`; 1.00–1.03 at NA/n ≤ 0.5, up to ~1.3 at 0.95 and
    large blur); the paraxial formula ``4√3·n·λ·c/NA²`` would overstate depth by 19 % at NA 0.75 in air.
    The sign follows the coefficient.
    """
    c = np.asarray(coefficient, dtype=np.float64)
    projected = c / _fit_ratio(c, optics.na / optics.n)
    return projected * optics.wavelength / (optics.n * defocus_per_wave_of_depth(optics.na, optics.n))


def z_to_defocus(dz, optics: Optics):
    """Noll Z4 defocus coefficient (waves RMS) of an axial distance ``dz`` (µm); inverse of `defocus_to_z`."""
    projected = np.asarray(dz, dtype=np.float64) * optics.n * defocus_per_wave_of_depth(optics.na, optics.n) \
        / optics.wavelength
    rows, coeffs, ratios = _depth_table()
    # invert c = r(c)·c_p on a fine grid of c (r varies slowly: the map c -> c_p is monotonic in practice)
    grid = np.geomspace(1e-4, 2 * coeffs[-1] * ratios.max(), 2048)
    grid_p = grid / _fit_ratio(grid, optics.na / optics.n)
    return np.sign(projected) * np.interp(np.abs(projected), grid_p, grid)
