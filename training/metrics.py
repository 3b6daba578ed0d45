"""Image-quality and PSF-map metrics of the evaluation protocol (paper: SNR after an affine grey-value match, SSIM).

SNR definition (`fiji_bridge.simulation.metrics.snr_db`, used by the demo, the tests and the benchmarks)::

    SNR = 10 log10( Σ (x - mean x)² / Σ (x - (a·y + b))² )

with ``x`` the ground truth, ``y`` the estimate and ``(a, b)`` the least-squares affine match of ``y`` to
``x``. It is invariant to any affine change ``y -> c·y + d`` (c != 0) of the estimate's grey values, so
methods that do not preserve flux or background are not penalised for it. Differences of SNR between
methods on one case (the "gains") do not depend on the numerator.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from fiji_bridge.simulation.metrics import affine_match, snr_db  # noqa: F401  (the one SNR; re-exported)


def ssim(estimate: np.ndarray, truth: np.ndarray) -> float:
    """SSIM (`skimage.metrics.structural_similarity`) of the affine-matched ``estimate`` against ``truth``.

    The estimate is affine-matched first (as for the SNR) and ``data_range`` is the truth's range.
    """
    truth = np.asarray(truth, np.float64)
    matched = affine_match(estimate, truth)
    return float(structural_similarity(truth, matched, data_range=float(truth.max() - truth.min())))


def straddling_patches(centres: np.ndarray, length: int, patch: int) -> np.ndarray:
    """Which patches (centred at ``centres``, side ``patch``) cover pixels on both sides of ``length // 2``.

    Used to exclude patches that straddle a quadrant border, where the true PSF is not unique.
    """
    half = (patch - 1) / 2
    border = length // 2
    return (np.asarray(centres) - half < border) & (np.asarray(centres) + half >= border)


def map_mask(informative: np.ndarray, centres_y: np.ndarray, centres_x: np.ndarray, shape: tuple[int, int],
             patch: int, quadrants: bool) -> np.ndarray:
    """Patches used to score the map: informative ones, minus those straddling a quadrant border.

    Parameters
    ----------
    informative : ndarray of bool, shape (my, mx)
        The model's information flags.
    centres_y, centres_x : ndarray
        Patch centres in pixels.
    shape : (int, int)
        Image shape.
    patch : int
        Patch side in pixels.
    quadrants : bool
        Exclude border-straddling patches (quadrant layout); the tilted plane has no borders.
    """
    mask = np.asarray(informative, bool).copy()
    if quadrants:
        mask &= ~straddling_patches(centres_y, shape[0], patch)[:, None]
        mask &= ~straddling_patches(centres_x, shape[1], patch)[None, :]
    return mask


def regression_metrics(pred: np.ndarray, true: np.ndarray, tolerance: float) -> dict:
    """R², RMSE and accuracy (fraction with ``|pred - true| <= tolerance``) of paired values.

    R² is NaN when ``true`` is constant (e.g. astigmatism of the tilted plane, all zero).
    """
    pred, true = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
    err = pred - true
    ss_tot = float(np.sum((true - true.mean()) ** 2)) if true.size else 0.0
    return {"r2": 1.0 - float(err @ err) / ss_tot if ss_tot > 1e-12 else float("nan"),
            "rmse": float(np.sqrt(np.mean(err ** 2))) if err.size else float("nan"),
            "accuracy": float(np.mean(np.abs(err) <= tolerance)) if err.size else float("nan"),
            "n": int(err.size)}


def map_metrics(estimated: np.ndarray, true: np.ndarray, mask: np.ndarray, names: list[str],
                tolerance: float) -> dict:
    """Per-parameter `regression_metrics` of an estimated (P, my, mx) map against the true map at ``mask``."""
    return {name: regression_metrics(estimated[k][mask], true[k][mask], tolerance) for k, name in enumerate(names)}
