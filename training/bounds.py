"""Non-blind Bayes bound: the best defocus accuracy any estimator could reach on a held-out patch.

The CNN reads defocus *blind*: it does not know the sharp specimen, the astigmatism or the camera. An
estimator that knew all of them except defocus has strictly more information, so its Bayes risk under
the training prior is a ceiling for every blind estimator, the CNN included. For one noisy patch that
ceiling is computed exactly (up to a fine grid in defocus) from the posterior

    p(d | counts) ∝ p(counts | d, specimen, astigmatism, camera) · U(d; low, high)

with the camera likelihood of `training.synthesis` (Poisson counts plus Gaussian read noise, handled by
the standard shifted-Poisson approximation: counts + σ² ~ Poisson(μ + σ²)). Two optimal estimators
follow from the posterior:

* the posterior mean minimises the squared error → ceiling on R² and floor on RMSE;
* the point whose ±tolerance window holds the most posterior mass maximises the chance of being within
  the tolerance → that mass, averaged over patches, is the ceiling on the "accuracy" of the reports.

Noise-free patches are not bounded this way (with the specimen known every defocus is exact); there the
only loss is the blind ambiguity itself, which `smoothing_residual` measures: how much of the change that
defocus makes to the PSF can *not* be reproduced by smoothing the specimen instead (a non-negative kernel
applied to the sharper PSF). What it can reproduce, a blind estimator can only tell apart through its
prior on how sharp specimens are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.signal import fftconvolve
from scipy.special import logsumexp

from fiji_bridge.estimation.model import PSFModel
from fiji_bridge.optics import Optics
from fiji_bridge.optics.psf import psf_batch

from .config import TrainingConfig
from .evaluate import NOISE_LEVELS, calibration, heldout_set
from .metrics import regression_metrics
from .synthesis import Batch, synthesize

#: Defocus grid step (waves RMS): 1/12 of the 0.03 tolerance, so the grid costs < 1 % of accuracy.
GRID_STEP = 0.0025


def defocus_grid(cfg: TrainingConfig, step: float = GRID_STEP) -> np.ndarray:
    """Evenly spaced defocus values covering the model's defocus range (the uniform training prior)."""
    p = cfg.model.parameters[_defocus_index(cfg)]
    return np.linspace(p.low, p.high, int(round((p.high - p.low) / step)) + 1)


def _defocus_index(cfg: TrainingConfig) -> int:
    names = cfg.model.names
    if "defocus" not in names:
        raise ValueError(f"bounds: the model has no 'defocus' parameter (parameters: {', '.join(names)})")
    return names.index("defocus")


def defocus_log_posterior(batch: Batch, cfg: TrainingConfig, grid: np.ndarray) -> np.ndarray:
    """Normalised log-posterior of defocus on ``grid`` for every noisy patch of ``batch``.

    Everything but defocus (sharp specimen, other aberrations, photons, background, contrast, read
    noise) is taken from the batch, i.e. known to this estimator.

    Returns
    -------
    ndarray, shape (B, G)
        ``log p(grid[g] | counts_b)``; each row's exponentials sum to 1.
    """
    if not np.all(np.isfinite(batch.photons)):
        raise ValueError("bounds: noise-free patches have no posterior (defocus is exact when the specimen is known)")
    m, k = cfg.model, _defocus_index(cfg)
    out = np.empty((len(batch.labels), grid.size))
    for b in range(len(batch.labels)):
        params = np.repeat(batch.labels[b][None].astype(np.float64), grid.size, axis=0)
        params[:, k] = grid
        psfs = psf_batch(m.optics, m.nolls, params, m.psf_size)
        blurred = fftconvolve(batch.sharp[b][None], psfs, mode="valid", axes=(1, 2))
        mu = np.clip(batch.photons[b] * (batch.background[b] + batch.contrast[b] * blurred), 0, None)
        r2 = batch.read_noise[b] ** 2
        lam = mu + r2 + 1e-12
        y = np.clip(batch.counts[b] + r2, 0, None)
        ll = np.sum(y * np.log(lam) - lam, axis=(1, 2))
        out[b] = ll - logsumexp(ll)
    return out


def bayes_defocus(log_post: np.ndarray, grid: np.ndarray, tolerance: float) -> dict[str, np.ndarray]:
    """Optimal defocus estimates and their risks from a (B, G) log-posterior on ``grid``.

    Returns ``mean`` (posterior mean, minimum squared error), ``variance`` (its expected squared error),
    ``window`` (the centre whose ±``tolerance`` window holds most mass) and ``accuracy`` (that mass: the
    probability, given the data, that the best possible estimate is within the tolerance).
    """
    post = np.exp(log_post)
    mean = post @ grid
    variance = post @ grid**2 - mean**2
    inside = np.abs(grid[:, None] - grid[None, :]) <= tolerance + 1e-12      # (centre, value)
    mass = post @ inside.T.astype(float)                                       # (B, centre)
    best = np.argmax(mass, axis=1)
    return {"mean": mean, "variance": np.maximum(variance, 0.0), "window": grid[best],
            "accuracy": mass[np.arange(len(best)), best]}


def nonblind_estimates(batch: Batch, cfg: TrainingConfig, step: float = GRID_STEP) -> dict[str, np.ndarray]:
    """`bayes_defocus` on the informative patches of a noisy ``batch``, with their ``truth``."""
    flag = batch.informative
    grid = defocus_grid(cfg, step)
    sub = Batch(**{f: None if getattr(batch, f) is None else getattr(batch, f)[flag]
                   for f in Batch.__dataclass_fields__})
    est = bayes_defocus(defocus_log_posterior(sub, cfg, grid), grid, cfg.model.accuracy_tolerance)
    est["truth"] = sub.labels[:, _defocus_index(cfg)].astype(np.float64)
    return est


def summarize_bound(est: dict[str, np.ndarray], tolerance: float) -> dict:
    """Ceiling metrics from concatenated `nonblind_estimates`.

    ``posterior_mean`` and ``window_estimate`` are the realised metrics (as in the reports) of the two
    optimal estimates; ``expected`` are their values in expectation under the posterior (R² from the
    Bayes risk, accuracy as the mean best window mass), with less Monte-Carlo noise.
    """
    truth = est["truth"]
    ss = float(np.sum((truth - truth.mean()) ** 2))
    return {"posterior_mean": regression_metrics(est["mean"], truth, tolerance),
            "window_estimate": regression_metrics(est["window"], truth, tolerance),
            "expected": {"r2": 1.0 - float(est["variance"].sum()) / ss if ss > 0 else float("nan"),
                         "rmse": float(np.sqrt(est["variance"].mean())),
                         "accuracy": float(est["accuracy"].mean())}}


def bound_report(model_path: str | Path | None, cfg: TrainingConfig, n: int = 1000, chunk: int = 250) -> dict:
    """Non-blind ceiling next to the model's own defocus metrics on the same held-out patches (the sets of
    `training.evaluate`, noisy levels); the model on focus-only held-out patches (no astigmatism) with its
    calibration; and the smoothing-residual tables of defocus."""
    model = PSFModel(model_path)
    if model_path is None:                  # the bundled default's near-focus model: the single-patch one
        model = model.near_focus or model
    if model.config.input_channels != 1:
        raise ValueError(f"bounds: model {model.path.name} reads a context window; the bound is of single-patch models")
    tol, k = cfg.model.accuracy_tolerance, _defocus_index(cfg)
    levels = {}
    for level, photons in NOISE_LEVELS.items():
        if not np.isfinite(photons):
            continue
        parts, preds = [], []
        for start in range(0, n, chunk):
            b = heldout_set(cfg, photons, min(chunk, n - start), seed=12345 + start)
            parts.append(nonblind_estimates(b, cfg))
            preds.append(model.predict(b.inputs[b.informative, 0]).params[:, k])
        est = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        levels[level] = {"nonblind_ceiling": summarize_bound(est, tol),
                         "model": regression_metrics(np.concatenate(preds), est["truth"], tol),
                         "n": int(est["truth"].size)}
    focus_only = {}
    for level, photons in NOISE_LEVELS.items():
        # the paper's focus-only setting: only defocus, the range where the smoothing ambiguity is whole
        rng = np.random.default_rng([54321, int(min(photons, 1e9))])
        params = np.zeros((n, len(cfg.model.parameters)))
        params[:, k] = rng.uniform(cfg.model.parameters[k].low, cfg.model.parameters[k].high, n)
        b = synthesize(cfg, rng, n, split="heldout", photons=photons, params=params)
        pred, true = model.predict(b.inputs[b.informative, 0]).params[:, k], b.labels[b.informative, k]
        focus_only[level] = {"model": regression_metrics(pred, true, tol),
                             **calibration(pred, true, cfg.model.parameters[k].low, cfg.model.parameters[k].high)}
    d = np.round(np.arange(0.0, cfg.model.parameters[k].high + 1e-9, 0.05), 3)
    tables = {}
    for astig in (0.0, 0.04, 0.08, 0.12):
        table = defocus_smoothing_table(cfg.model.optics, d, cfg.model.psf_size, astigmatism=astig)
        tables[f"astigmatism_0={astig}"] = [[None if np.isnan(v) else round(float(v), 4) for v in row]
                                            for row in table]
    return {"parameter": "defocus", "tolerance_waves_rms": tol, "grid_step": GRID_STEP, "levels": levels,
            "focus_only": focus_only, "smoothing_residual": {"defocus": d.tolist(), "from_row_to_column": tables}}


def smoothing_residual(sharper: np.ndarray, blurrier: np.ndarray, kernel_size: int = 15) -> float:
    """Fraction of the difference between two PSFs that no non-negative smoothing kernel explains.

    Solves ``min ||k * sharper - blurrier||`` over non-negative ``kernel_size`` x ``kernel_size``
    kernels ``k`` (``*``: full 2-D convolution) and divides the residual norm by ``||blurrier -
    sharper||`` (the residual of the identity kernel). 0 means the blurrier PSF is exactly the sharper
    one applied to a smoothed specimen: no image can tell the two apart without knowing the specimen.

    Parameters
    ----------
    sharper, blurrier : ndarray, shape (S, S)
        Centred PSFs of equal odd size.
    kernel_size : int
        Odd side of the smoothing kernel, pixels.
    """
    if sharper.shape != blurrier.shape or sharper.ndim != 2 or sharper.shape[0] % 2 == 0 or kernel_size % 2 == 0:
        raise ValueError("smoothing_residual: PSFs must be equal odd-sized squares and kernel_size odd")
    r = kernel_size // 2
    target = np.pad(blurrier.astype(np.float64), r).ravel()
    identity = np.pad(sharper.astype(np.float64), r)
    base = float(np.linalg.norm(target - identity.ravel()))
    if base == 0.0:
        return 0.0
    shifted = [np.pad(sharper.astype(np.float64), ((r + dy, r - dy), (r + dx, r - dx))).ravel()
               for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    _, residual = nnls(np.stack(shifted, axis=1), target, maxiter=50 * kernel_size**2)
    return float(residual) / base


def defocus_smoothing_table(optics: Optics, defocus: np.ndarray, psf_size: int, kernel_size: int = 15,
                            astigmatism: float = 0.0) -> np.ndarray:
    """`smoothing_residual` from every defocus to every larger one (NaN on and below the diagonal), all
    PSFs sharing ``astigmatism`` waves RMS of 0° astigmatism (Noll 6)."""
    d = np.asarray(defocus, np.float64)
    psfs = psf_batch(optics, [4, 6], np.stack([d, np.full_like(d, astigmatism)], axis=1), psf_size)
    table = np.full((d.size, d.size), np.nan)
    for i in range(d.size):
        for j in range(i + 1, d.size):
            table[i, j] = smoothing_residual(psfs[i], psfs[j], kernel_size)
    return table
