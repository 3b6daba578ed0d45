"""Depth calibration of the defocus coefficient against a vectorial PSF (``python -m training depth``).

The network reads a Zernike Z4 coefficient ``c`` (the best Z4-only description of the local blur). A real
focal shift ``dz`` is not a pure Z4 wavefront beyond the paraxial regime, so ``c`` is converted to depth with a
correction measured here: for each NA/n and depth, the vectorial Gibson–Lanni PSF (`psfmodels`, matched
refractive indices, so only the focal shift matters) is fitted by the Z4-only scalar PSF of SemiBlind's model
(least squares over ``c``); the table stores ``c_fit / c_projection``, where ``c_projection`` is the exact
Z4 projection of the defocus wavefront (`fiji_bridge.optics.defocus_per_wave_of_depth`). The runtime
interpolates the table (`fiji_bridge.optics.defocus_to_z`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from fiji_bridge.optics import Optics, defocus_per_wave_of_depth
from fiji_bridge.optics.psf import psf_batch

#: NA/n and projected-coefficient grid of the table (waves RMS).
RELATIVE_NA = (0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.97)
COEFFICIENTS = (0.1, 0.15, 0.2, 0.28, 0.35, 0.5, 0.6, 0.75, 0.9, 1.0, 1.15, 1.3, 1.6, 2.0, 2.5)
#: Sampling pixel·NA/λ of the fits (Nyquist: the fit does not depend on it once the PSF is resolved).
SAMPLING = 0.2


def vectorial_psf(optics: Optics, dz: float, size: int) -> np.ndarray:
    """Gibson–Lanni vectorial PSF at focal shift ``dz`` (µm) with matched indices, normalised to sum 1."""
    import psfmodels

    n = optics.n
    params = dict(NA=optics.na, ni=n, ni0=n, ns=n, ng=1.515, ng0=1.515, ti0=150.0, tg=170.0, tg0=170.0)
    v = psfmodels.vectorial_psf(zv=[dz], nx=size, dxy=optics.pixel_size, pz=0.0, wvl=optics.wavelength,
                                params=params, normalize=False)[0]
    return (v / v.sum()).astype(np.float64)


def psf_size(c: float, sampling: float = SAMPLING) -> int:
    return 2 * int(np.ceil((4 * np.sqrt(3) * c + 4) / sampling)) + 1


def best_z4(optics: Optics, target: np.ndarray, guess: float) -> float:
    """Z4 coefficient whose scalar PSF fits ``target`` best (least squares)."""
    size = target.shape[-1]
    grid = guess * np.linspace(0.7, 1.8, 45)           # global search first: ringing PSFs have local minima
    costs = ((psf_batch(optics, [4], grid[:, None], size) - target) ** 2).sum(axis=(1, 2))
    i = int(np.argmin(costs))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]

    def cost(c: float) -> float:
        return float(((psf_batch(optics, [4], np.array([[c]]), size)[0] - target) ** 2).sum())

    res = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4 * guess})
    return float(res.x)


def best_focal_shift(optics: Optics, target: np.ndarray, guess: float) -> float:
    """Focal shift (µm) at which the training's PSF model -- the non-paraxial, apodised scalar pupil of
    `psf_batch` (``focal_shift``) -- fits ``target`` best (least squares on PSFs normalised to sum 1)."""
    size = target.shape[-1]

    def psfs(dz: np.ndarray) -> np.ndarray:
        p = psf_batch(optics, [4], np.zeros((len(dz), 1)), size, focal_shift=dz)
        return p / p.sum(axis=(1, 2), keepdims=True)

    grid = guess * np.linspace(0.7, 1.4, 36)
    i = int(np.argmin(((psfs(grid) - target) ** 2).sum(axis=(1, 2))))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(lambda dz: float(((psfs(np.array([dz]))[0] - target) ** 2).sum()), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-4 * guess})
    return float(res.x)


def fitted_ratio(relative_na: float, c: float, n: float = 1.0, wavelength: float = 0.55) -> float:
    """``c_fit / c_projection`` for the focal shift whose projected Z4 coefficient is ``c``."""
    na = relative_na * n
    optics = Optics(na=na, wavelength=wavelength, pixel_size=SAMPLING * wavelength / na, n=n)
    dz = c * wavelength / (n * defocus_per_wave_of_depth(na, n))
    return best_z4(optics, vectorial_psf(optics, dz, psf_size(1.8 * c)), c) / c


def calibration_table() -> dict:
    ratios = [[round(fitted_ratio(s, c), 5) for c in COEFFICIENTS] for s in RELATIVE_NA]
    return {"description": __doc__.strip().splitlines()[0], "relative_na": list(RELATIVE_NA),
            "projected_coefficient": list(COEFFICIENTS), "fit_over_projection": ratios,
            "reference": "psfmodels.vectorial_psf (Gibson-Lanni, Aguet 2009), matched indices",
            "sampling": SAMPLING}


def main(path: str | Path) -> dict:
    table = calibration_table()
    Path(path).write_text(json.dumps(table, indent=1) + "\n")
    return table
