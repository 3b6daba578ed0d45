"""Synthetic training samples: sharp specimen patches blurred by random Zernike PSFs, with camera noise.

Parameterisation (identifiability): defocus, astigmatism and spherical terms are even in the pupil, so
the coefficient vectors c and -c give the same intensity PSF. Labels use the canonical sign with
defocus >= 0 (the model's defocus range starts at 0); astigmatism keeps its sign relative to defocus,
which is what sets the orientation of the elongated PSF.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from fiji_bridge.model_config import normalize_patches
from fiji_bridge.psf import psf_batch

from .config import TrainingConfig
from .sources import SpecimenSampler


@dataclass
class Batch:
    """One synthetic batch. ``inputs`` are normalised exactly as at inference."""

    inputs: np.ndarray        # (B, 1, P, P) float32, normalised
    labels: np.ndarray        # (B, K) physical parameter values
    informative: np.ndarray   # (B,) bool
    sharp: np.ndarray         # (B, P+S-1, P+S-1) sharp source, for checks
    clean: np.ndarray         # (B, P, P) expected counts (noise-free)
    photons: np.ndarray       # (B,) peak photon level (inf = noise-free)
    counts: np.ndarray        # (B, P, P) raw camera counts before normalisation (= clean when noise-free)
    background: np.ndarray    # (B,) background, in units of the specimen's dynamic range
    contrast: np.ndarray      # (B,)
    read_noise: np.ndarray    # (B,) Gaussian read-noise std, counts
    kinds: np.ndarray         # (B,) str: source image name or procedural generator ("flat" for blank patches)


def draw_parameters(cfg: TrainingConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform draws from each parameter's documented range, shape (n, K)."""
    return np.stack([rng.uniform(p.low, p.high, n) for p in cfg.model.parameters], axis=1)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), n))


def synthesize(cfg: TrainingConfig, rng: np.random.Generator, n: int, split: str = "train",
               photons: float | None = None, params: np.ndarray | None = None) -> Batch:
    """Generate ``n`` samples.

    Parameters
    ----------
    cfg : TrainingConfig
    rng : numpy.random.Generator
        All randomness (specimens, parameters, noise) comes from it: same seed, same batch.
    n : int
        Batch size.
    split : {'train', 'heldout'}
        Source images and procedural seeds (held-out ones are never seen in training).
    photons : float, optional
        Fixed peak photon level; ``np.inf`` means noise-free. Default: random per the noise config.
    params : ndarray (n, K), optional
        Fixed parameters instead of random draws.
    """
    m, syn, nz = cfg.model, cfg.synthesis, cfg.noise
    p, s = m.patch_size, m.psf_size
    src = p + s - 1
    sampler = SpecimenSampler(split, rng, p_real=syn.p_real, scale_range=tuple(syn.scale_range))
    sharp, kinds = np.empty((n, src, src), np.float32), np.empty(n, dtype=object)
    for i in range(n):
        sharp[i], kinds[i] = sampler.sample(src), sampler.last_kind
    blank = rng.random(n) < syn.blank_fraction
    sharp[blank] = sharp[blank].mean(axis=(1, 2), keepdims=True)        # flat field: no blur information
    kinds[blank] = "flat"
    labels = draw_parameters(cfg, rng, n) if params is None else np.asarray(params, np.float64)
    psfs = psf_batch(m.optics, m.nolls, labels, s)
    blurred = fftconvolve(sharp, psfs, mode="valid", axes=(1, 2))        # (n, P, P), linear convolution
    contrast = rng.uniform(*nz.contrast, n)[:, None, None]
    background = rng.uniform(*nz.background, n)[:, None, None]
    peak = np.full(n, float(photons)) if photons is not None else _log_uniform(rng, nz.photons, n)
    finite = np.isfinite(peak)
    scale = np.where(finite, peak, 1000.0)[:, None, None]
    clean = np.clip(scale * (background + contrast * blurred), 0, None)
    read = rng.uniform(*nz.read_noise, n)[:, None, None]
    noisy = np.where(finite[:, None, None], rng.poisson(clean) + rng.normal(0, 1, clean.shape) * read, clean)
    noise_std = np.where(finite, np.sqrt(clean.mean(axis=(1, 2)) + read[:, 0, 0] ** 2), 1e-3 * scale[:, 0, 0])
    informative = (clean.std(axis=(1, 2)) / noise_std >= syn.min_signal_to_noise) & ~blank
    return Batch(inputs=normalize_patches(noisy), labels=labels.astype(np.float32), informative=informative,
                 sharp=sharp, clean=clean.astype(np.float32), photons=peak, counts=noisy.astype(np.float32),
                 background=background[:, 0, 0], contrast=contrast[:, 0, 0], read_noise=read[:, 0, 0],
                 kinds=kinds.astype(str))
