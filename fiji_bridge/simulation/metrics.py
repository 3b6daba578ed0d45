"""The image-quality metric of the paper, against a known ground truth: SNR after the best affine grey-value
match (`snr_db`). Used by the demo, the tests, the benchmarks and training's evaluation (`training.metrics`).

    SNR = 10 log10( Σ (x - mean x)² / Σ (x - (a·y + b))² )

with ``x`` the ground truth, ``y`` the estimate and ``(a, b)`` the least-squares affine match of ``y`` to ``x``:
invariant to any affine change of the estimate's grey values.
"""
from __future__ import annotations

import numpy as np


def affine_match(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Best least-squares affine grey-value match ``a·estimate + b`` of ``estimate`` to ``truth``.

    Parameters
    ----------
    estimate, truth : ndarray
        Arrays of the same shape.

    Returns
    -------
    ndarray, float64, shape of ``estimate``.
    """
    y = np.asarray(estimate, np.float64).ravel()
    x = np.asarray(truth, np.float64).ravel()
    yc = y - y.mean()
    var = float(yc @ yc)
    a = float(yc @ (x - x.mean())) / var if var > 0 else 0.0
    return (a * yc + x.mean()).reshape(np.shape(estimate))


def snr_db(estimate: np.ndarray, truth: np.ndarray) -> float:
    """SNR in dB of ``estimate`` after its best affine grey-value match to ``truth`` (module docstring).

    Parameters
    ----------
    estimate, truth : ndarray
        Arrays of the same shape; ``truth`` must not be constant.

    Returns
    -------
    float (``inf`` for a perfect affine match).
    """
    truth = np.asarray(truth, np.float64)
    if np.shape(estimate) != truth.shape:
        raise ValueError(f"snr_db: shapes differ: {np.shape(estimate)} vs {truth.shape}")
    signal = float(np.sum((truth - truth.mean()) ** 2))
    if signal <= 0:
        raise ValueError("snr_db: the ground truth is constant")
    noise = float(np.sum((truth - affine_match(estimate, truth)) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)
