"""Baselines of the evaluation protocol (issue 4, §3).

(b) oracle: spatially-variant TV-RL with the *true* PSF map, rendered on the same grid nodes as ours;
(c) `deconvblind`: blind shift-invariant deconvolution by alternating Richardson–Lucy updates of the image
    and of the PSF (Fish et al. 1995; Holmes 1992), in the spirit of MATLAB's ``deconvblind``;
(d) `global_cnn_deconvolve`: shift-invariant TV-RL with one global PSF estimated by our CNN (median of the
    map's parameters over the whole image).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.fft

from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.estimation.psf_map import PSFMap
from fiji_bridge.restoration.richardson_lucy import richardson_lucy, tv_divergence


# --------------------------------------------------------------------------------------------------
# (c) blind shift-invariant Richardson–Lucy (deconvblind-like)
# --------------------------------------------------------------------------------------------------

def initial_psf(size: int, kind: str = "gaussian", width: float = 2.0) -> np.ndarray:
    """Flat disk (radius ``width``) or Gaussian (sigma ``width``) PSF of odd side ``size``, summing to 1."""
    if size < 3 or size % 2 == 0:
        raise ValueError(f"initial_psf: size must be odd and >= 3, got {size}")
    r = np.arange(size) - size // 2
    rr = np.hypot(*np.meshgrid(r, r, indexing="ij"))
    if kind == "gaussian":
        psf = np.exp(-0.5 * (rr / width) ** 2)
    elif kind == "disk":
        psf = (rr <= width).astype(np.float64)
    else:
        raise ValueError(f"initial_psf: kind must be 'gaussian' or 'disk', got {kind!r}")
    return psf / psf.sum()


class _ValidConvolution:
    """``y = valid(x * h)``: an object on a field extended by the PSF margin blurred to the observed image.

    All products use one real FFT size (>= the extended field), where circular wrap-around touches only
    discarded samples, so every operation below is an exact linear convolution/correlation.
    """

    def __init__(self, image_shape: tuple[int, int], psf_size: int):
        self.m = psf_size // 2
        self.size = psf_size
        self.field = (image_shape[0] + 2 * self.m, image_shape[1] + 2 * self.m)
        self.fft_shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in self.field)
        self.observed = (slice(2 * self.m, self.field[0]), slice(2 * self.m, self.field[1]))
        self.ones = self.spectrum_of_data(np.ones(image_shape))

    def spectrum(self, a: np.ndarray) -> np.ndarray:
        """rfft2 of ``a`` zero-padded (at the origin) to the FFT shape."""
        return scipy.fft.rfft2(a, s=self.fft_shape)

    def spectrum_of_data(self, r: np.ndarray) -> np.ndarray:
        """rfft2 of an observed-size array placed at its position in the full convolution."""
        pad = np.zeros(self.fft_shape)
        pad[self.observed] = r
        return scipy.fft.rfft2(pad)

    def inverse(self, spec: np.ndarray) -> np.ndarray:
        return scipy.fft.irfft2(spec, s=self.fft_shape)

    def forward(self, x_spec: np.ndarray, h_spec: np.ndarray) -> np.ndarray:
        """Observed blurred image from object and PSF spectra."""
        return self.inverse(x_spec * h_spec)[self.observed]

    def adjoint_x(self, r_spec: np.ndarray, h_spec: np.ndarray) -> np.ndarray:
        """``Hᵀ r`` on the extended object field (correlation with the PSF)."""
        return self.inverse(r_spec * h_spec.conj())[:self.field[0], :self.field[1]]

    def adjoint_h(self, r_spec: np.ndarray, x_spec: np.ndarray) -> np.ndarray:
        """``Xᵀ r`` on the PSF support (correlation of the data-size array with the object)."""
        return self.inverse(r_spec * x_spec.conj())[:self.size, :self.size]


@dataclass
class BlindResult:
    """Output of `deconvblind`: restored image, estimated PSF, and snapshots at requested iterations."""

    image: np.ndarray
    psf: np.ndarray
    snapshots: dict[int, np.ndarray]


def deconvblind(image: np.ndarray, psf_size: int, iterations: int = 30, tv: float = 0.0,
                init: str = "gaussian", init_width: float = 2.0, snapshots: Sequence[int] = (),
                eps: float = 1e-6) -> BlindResult:
    """Blind shift-invariant deconvolution by alternating Richardson–Lucy updates (Fish et al. 1995).

    Each iteration does one RL update of the object with the current PSF (optionally with the TV factor of
    `fiji_bridge.restoration.richardson_lucy`, Dey et al. 2006), then one RL update of the PSF with the new object; the
    PSF is kept non-negative, normalised to sum 1 and supported on ``psf_size`` x ``psf_size`` pixels. As in
    our RL (``boundary='extend'``), the object lives on a field extended by the PSF margin and only observed
    pixels enter the data term.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Blurred image, roughly photon counts (negative values are clipped to 0).
    psf_size : int
        Odd side of the PSF support (e.g. the model's ``psf_size``).
    iterations : int
        Number of alternating iterations.
    tv : float
        TV weight of the object update (0 = plain RL, as MATLAB's deconvblind).
    init, init_width : str, float
        Initial PSF: 'gaussian' (sigma) or 'disk' (radius), in pixels.
    snapshots : sequence of int
        Iterations after which the restored image is also recorded (for a best-of-iterations choice).
    eps : float
        Relative floor (x image maximum) protecting divisions.

    Returns
    -------
    BlindResult with the restored (H, W) float32 image, the (psf_size, psf_size) PSF and the snapshots.
    """
    y = np.clip(np.asarray(image, np.float64), 0, None)
    if y.ndim != 2 or min(y.shape) < psf_size:
        raise ValueError(f"deconvblind: need a 2-D image at least {psf_size} pixels wide, got {y.shape}")
    op = _ValidConvolution(y.shape, psf_size)
    floor = eps * max(float(y.max()), 1e-12)
    h = initial_psf(psf_size, init, init_width)
    x = np.full(op.field, y.mean())
    m = op.m
    crop = (slice(m, m + y.shape[0]), slice(m, m + y.shape[1]))
    kept: dict[int, np.ndarray] = {}
    for it in range(1, iterations + 1):
        x = _object_step(op, y, x, h, tv, floor)
        h = _psf_step(op, y, x, h, floor)
        if it in snapshots:
            kept[it] = x[crop].astype(np.float32)
    return BlindResult(image=x[crop].astype(np.float32), psf=h.astype(np.float32), snapshots=kept)


def _object_step(op: _ValidConvolution, y: np.ndarray, x: np.ndarray, h: np.ndarray, tv: float,
                 floor: float) -> np.ndarray:
    """One (TV-)RL update of the object with PSF ``h``."""
    h_spec = op.spectrum(h)
    ratio = y / np.maximum(op.forward(op.spectrum(x), h_spec), floor)
    update = op.adjoint_x(op.spectrum_of_data(ratio), h_spec) / np.maximum(op.adjoint_x(op.ones, h_spec), floor)
    if tv > 0:
        update /= np.maximum(1.0 - tv * tv_divergence(x, np, 8 * tv * x + floor), 0.2)
    return x * np.clip(update, 0, None)


def _psf_step(op: _ValidConvolution, y: np.ndarray, x: np.ndarray, h: np.ndarray, floor: float) -> np.ndarray:
    """One RL update of the PSF with object ``x``, then projection: >= 0, sum 1, fixed support."""
    x_spec = op.spectrum(x)
    ratio = y / np.maximum(op.forward(x_spec, op.spectrum(h)), floor)
    norm = np.maximum(op.adjoint_h(op.ones, x_spec), floor)
    h = np.clip(h * op.adjoint_h(op.spectrum_of_data(ratio), x_spec) / norm, 0, None)
    total = h.sum()
    return h / total if total > 0 else initial_psf(len(h))


# --------------------------------------------------------------------------------------------------
# (d) shift-invariant TV-RL with one global CNN PSF
# --------------------------------------------------------------------------------------------------

def global_parameters(psf_map: PSFMap) -> np.ndarray:
    """One parameter vector for the whole image: per-parameter median of the map over informative patches."""
    mask = psf_map.informative if psf_map.informative.any() else np.ones_like(psf_map.informative)
    return np.array([np.median(p[mask]) for p in psf_map.parameters])


def global_cnn_deconvolve(image: np.ndarray, psf_map: PSFMap, iterations: int = 30,
                          tv: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Shift-invariant TV-RL with the single PSF of `global_parameters` (baseline d).

    Returns
    -------
    (restored image, the global PSF)
    """
    psf = psf_batch(psf_map.optics, psf_map.nolls, global_parameters(psf_map)[None], psf_map.psf_size)[0]
    return np.asarray(richardson_lucy(np.asarray(image, np.float32), psf, iterations=iterations, tv=tv)), psf


# --------------------------------------------------------------------------------------------------
# (b) oracle: the true PSF map on the same grid nodes
# --------------------------------------------------------------------------------------------------

def true_psf_map(psf_map: PSFMap, true_map: np.ndarray, centres_y: np.ndarray, centres_x: np.ndarray) -> PSFMap:
    """A copy of ``psf_map`` whose parameters are the true ones (all patches informative).

    ``true_map`` (P, my, mx) must be given at the patch centres ``centres_y/x``; rendering it with
    `PSFMap.render_psfs` then uses exactly the grid nodes and interpolation of our method.
    """
    if true_map.shape[0] != psf_map.parameters.shape[0]:
        raise ValueError(f"true map has {true_map.shape[0]} parameters, the estimated map "
                         f"{psf_map.parameters.shape[0]}")
    return replace(psf_map, parameters=np.asarray(true_map, np.float32), raw=np.asarray(true_map, np.float32),
                   std=np.zeros_like(true_map, np.float32),
                   confidence=np.ones(true_map.shape[1:], np.float32),
                   informative=np.ones(true_map.shape[1:], bool), beyond=None, reliable=None,
                   centres_y=np.asarray(centres_y, np.float64), centres_x=np.asarray(centres_x, np.float64))


def oracle_deconvolve(image: np.ndarray, true_map: PSFMap, iterations: int = 30, tv: float = 0.002,
                      grid: tuple[int, int] | None = None) -> np.ndarray:
    """Spatially-variant TV-RL with the true PSF map (baseline b, the upper bound of our method).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Blurred image.
    true_map : PSFMap
        From `true_psf_map`.
    iterations, tv : int, float
        As for our method.
    grid : (gy, gx), optional
        PSF grid, the same as our method's (default: `fiji_bridge.estimation.psf_map.default_grid`).
    """
    psfs, cy, cx = true_map.render_psfs(grid)
    return np.asarray(richardson_lucy(np.asarray(image, np.float32), psfs, iterations=iterations, tv=tv,
                                      centres=(cy, cx)))
