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

from scipy import ndimage

from fiji_bridge.estimation.model_config import assemble_inputs, normalize_patches
from fiji_bridge.optics import Optics, defocus_to_z
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.estimation.resample import area_coordinates, block_mean, interpolate_linear, resample

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
    sampling: np.ndarray | None = None   # (B,) camera sampling pixel·NA/λ (context models)
    beyond: np.ndarray | None = None     # (B,) bool: defocus beyond the model's range (context models)


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
    if cfg.model.input_channels > 1:
        return synthesize_context(cfg, rng, n, split, photons, params)
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


def camera_image(canonical: np.ndarray, ratio: float) -> np.ndarray:
    """What a camera whose pixels are ``ratio`` canonical pixels wide records of a Nyquist-sampled intensity:
    each pixel integrates its area (box of ``ratio`` pixels when ``ratio`` > 1), sampled at its centre;
    finer cameras interpolate the band-limited intensity. Shape ``round(N / ratio)`` a side."""
    size = [max(int(round(n / ratio)), 1) for n in canonical.shape]
    out = canonical
    if ratio > 1:
        out = ndimage.uniform_filter(out, size=max(int(round(ratio)), 1), mode="reflect")
    for axis, m in ((0, size[0]), (1, size[1])):
        out = interpolate_linear(out, area_coordinates(out.shape[axis], m), axis)
    return out


#: NA/n levels the focal-shift PSFs are rendered at (grouped: one pupil grid per level and batch).
_RELATIVE_NA_LEVELS = 8


def focal_shift_psfs(cfg: TrainingConfig, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PSFs at the model's sampling of objectives with random NA/n whose focal shift has the Z4 coefficient
    ``labels[:, 0]`` (`fiji_bridge.optics.defocus_to_z`, the runtime's conversion) and whose other Zernike
    terms are ``labels[:, 1:]``: the non-paraxial, apodised pupil of `psf_batch` (``focal_shift``)."""
    m, syn = cfg.model, cfg.synthesis
    levels = np.linspace(*syn.relative_na, _RELATIVE_NA_LEVELS)
    which = rng.integers(0, len(levels), len(labels))
    out = np.empty((len(labels), m.psf_size, m.psf_size), np.float32)
    defocus = m.names.index("defocus")
    for k in np.unique(which):
        rows = which == k
        # matched indices: the PSF's shape depends on NA/n only, its scale on λ/NA (fixed by the sampling)
        optics = Optics(na=float(levels[k]), wavelength=m.optics.wavelength, n=1.0,
                        pixel_size=m.sampling * m.optics.wavelength / float(levels[k]))
        coeffs = np.array(labels[rows], np.float64)
        dz = defocus_to_z(coeffs[:, defocus], optics)
        coeffs[:, defocus] = 0.0
        out[rows] = psf_batch(optics, m.nolls, coeffs, m.psf_size, focal_shift=dz)
    return out


def synthesize_context(cfg: TrainingConfig, rng: np.random.Generator, n: int, split: str = "train",
                       photons: float | None = None, params: np.ndarray | None = None,
                       camera_sampling: np.ndarray | None = None) -> Batch:
    """Samples for a model with a context window and a range of camera samplings (see `synthesize`).

    The specimen is blurred at the model's sampling (Nyquist or finer, so the blurred intensity is exact),
    recorded by a camera at a random sampling in ``synthesis.camera_sampling`` (pixel integration, then
    Poisson + read noise per camera pixel), and resampled back with `fiji_bridge.resample.resample` as
    at inference. The network sees the central patch, the ``context_factor``-times wider window
    block-averaged to a patch, and log(camera sampling / model sampling).
    """
    m, syn, nz = cfg.model, cfg.synthesis, cfg.noise
    p, s, k = m.patch_size, m.psf_size, m.context_factor
    region = k * p
    src = region + s - 1
    sampler = SpecimenSampler(split, rng, p_real=syn.p_real, scale_range=tuple(syn.scale_range))
    reuse = max(int(syn.specimen_reuse), 1)
    sharp, kinds = np.empty((n, src, src), np.float32), np.empty(n, dtype=object)
    for i in range(0, n, reuse):
        sharp[i], kinds[i] = sampler.sample(src), sampler.last_kind
        for j in range(i + 1, min(i + reuse, n)):       # same specimen, another orientation and blur
            sharp[j], kinds[j] = np.rot90(sharp[i], j - i), kinds[i]
    blank = rng.random(n) < syn.blank_fraction
    sharp[blank] = sharp[blank].mean(axis=(1, 2), keepdims=True)
    kinds[blank] = "flat"
    if params is None:
        labels = draw_parameters(cfg, rng, n)
        beyond = rng.random(n) < syn.beyond_fraction
        top = m.parameters[0].high
        labels[beyond, 0] = rng.uniform(top, top * syn.beyond_factor, int(beyond.sum()))
    else:
        labels = np.asarray(params, np.float64)
    beyond = labels[:, 0] > m.parameters[0].high
    lo_s, hi_s = syn.camera_sampling or (m.sampling, m.sampling)
    sampling = (np.asarray(camera_sampling, np.float64) if camera_sampling is not None
                else _log_uniform(rng, (lo_s, hi_s), n))
    # (no draw at all without focal-shift samples: older configs keep their random stream)
    realistic = rng.random(n) < syn.focal_shift_fraction if syn.focal_shift_fraction else np.zeros(n, bool)
    psfs = np.empty((n, s, s), np.float32)
    if not realistic.all():
        psfs[~realistic] = psf_batch(m.optics, m.nolls, labels[~realistic], s)
    if realistic.any():
        psfs[realistic] = focal_shift_psfs(cfg, labels[realistic], rng)
    blurred = fftconvolve(sharp, psfs, mode="valid", axes=(1, 2))           # (n, region, region)
    contrast = rng.uniform(*nz.contrast, n)
    background = rng.uniform(*nz.background, n)
    peak = np.full(n, float(photons)) if photons is not None else _log_uniform(rng, nz.photons, n)
    read = rng.uniform(*nz.read_noise, n)
    fine = np.empty((n, p, p), np.float32)
    context = np.empty((n, p, p), np.float32)
    clean_fine = np.empty((n, p, p), np.float32)
    informative = np.empty(n, bool)
    c0 = (region - p) // 2
    for i in range(n):
        finite = np.isfinite(peak[i])
        scale = peak[i] if finite else 1000.0
        clean = np.clip(scale * (background[i] + contrast[i] * camera_image(blurred[i], sampling[i] / m.sampling)),
                        0, None)
        if finite:
            noisy = rng.poisson(clean) + rng.normal(0, 1, clean.shape) * read[i]
            noise_std = np.sqrt(clean.mean() + read[i] ** 2)
        else:
            noisy, noise_std = clean, 1e-3 * scale
        informative[i] = clean.std() / noise_std >= syn.min_signal_to_noise and not blank[i]
        back = resample(noisy, (region, region))
        fine[i], context[i] = back[c0:c0 + p, c0:c0 + p], block_mean(back, k)
        clean_fine[i] = resample(clean, (region, region))[c0:c0 + p, c0:c0 + p]
    log_sampling = np.log(sampling / m.sampling).astype(np.float32)
    return Batch(inputs=assemble_inputs(fine, context, log_sampling), labels=labels.astype(np.float32),
                 informative=informative, sharp=sharp, clean=clean_fine, photons=peak, counts=fine,
                 background=background, contrast=contrast, read_noise=read, kinds=kinds.astype(str),
                 sampling=sampling, beyond=beyond)
