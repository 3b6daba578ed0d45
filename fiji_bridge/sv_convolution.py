"""Spatially-variant convolution on a grid of PSFs blended by bilinear weights, and its adjoint.

``H x = Σ_i h_i * (w_i · x)`` and ``Hᵀ y = Σ_i w_i · (flip(h_i) * y)`` (Nagy & O'Leary 1998,
Hirsch et al. 2010), where ``w_i`` are tent (bilinear interpolation) weights around the grid nodes
that sum to one at every pixel. Each node's term is computed with a local FFT over the support of its
weight plus the PSF margin, batched over nodes, so an iteration costs a small multiple of one
full-image FFT convolution whatever the grid size. Convolution is linear (zero extension outside the
array), never circular.
"""
from __future__ import annotations

import numpy as np

from .backend import array_module, fft_module, fft_workers


def fft_length(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` with ``a >= 3``: pocketfft and cuFFT are fastest on such even,
    5-smooth lengths (``scipy.fft.next_fast_len`` may return factors of 7 and 11, measured slower)."""
    best = 8 * n
    p2 = 8
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < n:
                p5 *= 5
            best = min(best, p5)
            p3 *= 3
        p2 *= 2
    return best


def node_centres(length: int, count: int) -> np.ndarray:
    """Pixel coordinates of ``count`` grid nodes at the centres of equal cells over ``length`` pixels."""
    return (np.arange(count) + 0.5) * length / count - 0.5


def tent_weights(length: int, centres: np.ndarray) -> np.ndarray:
    """1-D bilinear interpolation weights, shape (len(centres), length).

    Weight ``k`` is 1 at node ``k``, falls linearly to 0 at the neighbouring nodes and stays flat
    beyond the first/last node, so the weights sum to 1 at every pixel.
    """
    pos = np.arange(length, dtype=np.float64)
    eye = np.eye(len(centres))
    return np.stack([np.interp(pos, centres, eye[k]) for k in range(len(centres))])


def as_psf_grid(psfs, image_shape: tuple[int, int]) -> np.ndarray:
    """Validate ``psfs`` (one 2-D PSF or a (gy, gx, h, w) grid) and return a (gy, gx, h, w) array."""
    xp = array_module(psfs)
    psfs = xp.asarray(psfs)
    if psfs.ndim == 2:
        psfs = psfs[None, None]
    if psfs.ndim != 4:
        raise ValueError(f"psfs must be one 2-D PSF or a (gy, gx, h, w) grid, got shape {psfs.shape}")
    gy, gx, h, w = psfs.shape
    if min(psfs.shape) < 1:
        raise ValueError(f"psfs: empty PSF grid of shape {psfs.shape}")
    if h > image_shape[0] or w > image_shape[1]:
        raise ValueError(f"psfs: PSF of {h}x{w} pixels is larger than the image {image_shape[0]}x{image_shape[1]}")
    if gy > image_shape[0] // 2 or gx > image_shape[1] // 2:
        raise ValueError(f"psfs: a {gy}x{gx} PSF grid does not fit an image of {image_shape[0]}x{image_shape[1]} "
                         "pixels (each grid cell needs at least 2 pixels)")
    if not bool(xp.all(xp.isfinite(psfs))):
        raise ValueError("psfs: PSFs contain NaN or inf")
    if bool(xp.any(psfs < 0)):
        raise ValueError("psfs: PSFs must be non-negative")
    if bool(xp.any(psfs.sum(axis=(-2, -1)) <= 0)):
        raise ValueError("psfs: every PSF must have a positive sum")
    return psfs


class SVConvolution:
    """Linear spatially-variant blur operator on arrays of one shape.

    Parameters
    ----------
    psfs : ndarray, shape (gy, gx, h, w) or (h, w)
        PSF grid (NumPy or CuPy; the operator works in that array module). PSF centres are at index
        ``((h - 1) // 2, (w - 1) // 2)`` as in ``scipy.signal.convolve(..., mode='same')``.
    shape : tuple of int
        Shape (H, W) of the arrays the operator acts on.
    centres : tuple of ndarray, optional
        Node coordinates (rows, cols) in pixels; default: centres of a regular gy x gx partition.
    observed : tuple of slice, optional
        Region of the blurred result that is observed: `forward` returns only this region and
        `adjoint` takes an array of its shape (zero elsewhere). Default: the whole array.
    """

    def __init__(self, psfs, shape: tuple[int, int], centres: tuple[np.ndarray, np.ndarray] | None = None,
                 observed: tuple[slice, slice] | None = None):
        self.xp = xp = array_module(psfs)
        self.fft = fft_module(xp)
        psfs = as_psf_grid(psfs, shape).astype(xp.float32)
        gy, gx, h, w = psfs.shape
        self.shape, self.psf_shape = tuple(shape), (h, w)
        cy, cx = centres if centres is not None else (node_centres(shape[0], gy), node_centres(shape[1], gx))
        wy, wx = tent_weights(shape[0], np.asarray(cy)), tent_weights(shape[1], np.asarray(cx))
        # support [lo, hi) of each node's weight along each axis
        sy = [(int(np.flatnonzero(r)[0]), int(np.flatnonzero(r)[-1]) + 1) for r in wy]
        sx = [(int(np.flatnonzero(r)[0]), int(np.flatnonzero(r)[-1]) + 1) for r in wx]
        max_y, max_x = max(b - a for a, b in sy), max(b - a for a, b in sx)
        self.fft_shape = (fft_length(max_y + h - 1), fft_length(max_x + w - 1))
        self.nodes = [(i, j, sy[i], sx[j]) for i in range(gy) for j in range(gx)]
        self.weights = [xp.asarray(np.outer(wy[i, a:b], wx[j, c:d]), dtype=xp.float32)
                        for i, j, (a, b), (c, d) in self.nodes]
        with fft_workers(xp):
            self.spectra = self.fft.rfft2(psfs.reshape(gy * gx, h, w), s=self.fft_shape, axes=(-2, -1))
        self.spectra_conj = self.spectra.conj()
        n = len(self.nodes)
        self._buf_fwd = xp.zeros((n, *self.fft_shape), xp.float32)
        self._buf_adj = xp.zeros((n, *self.fft_shape), xp.float32)
        oy, ox = (h - 1) // 2, (w - 1) // 2
        ry, rx = observed if observed is not None else (slice(0, shape[0]), slice(0, shape[1]))
        # observed region in the coordinates of the full linear-convolution result
        self._out = (slice(oy + ry.start, oy + ry.stop), slice(ox + rx.start, ox + rx.stop))
        self.observed_shape = (ry.stop - ry.start, rx.stop - rx.start)

    def _padded(self) -> tuple[int, int]:
        return self.shape[0] + self.psf_shape[0] - 1, self.shape[1] + self.psf_shape[1] - 1

    def forward(self, x):
        """``H x``: blur ``x`` (shape ``self.shape``); returns the observed region."""
        xp, (h, w) = self.xp, self.psf_shape
        buf = self._buf_fwd
        for k, (_, _, (a, b), (c, d)) in enumerate(self.nodes):
            xp.multiply(self.weights[k], x[a:b, c:d], out=buf[k, :b - a, :d - c])
        with fft_workers(xp):
            full = self.fft.irfft2(self.fft.rfft2(buf, axes=(-2, -1)) * self.spectra, s=self.fft_shape, axes=(-2, -1))
        out = xp.zeros(self._padded(), xp.float32)
        for k, (_, _, (a, b), (c, d)) in enumerate(self.nodes):
            out[a:b + h - 1, c:d + w - 1] += full[k, :b - a + h - 1, :d - c + w - 1]
        return out[self._out]

    def adjoint(self, y):
        """``Hᵀ y``: correlate ``y`` (observed shape) with each node's PSF, blend with the node weights."""
        xp, (h, w) = self.xp, self.psf_shape
        ypad = xp.zeros(self._padded(), xp.float32)
        ypad[self._out] = y
        buf = self._buf_adj
        for k, (_, _, (a, b), (c, d)) in enumerate(self.nodes):
            buf[k, :b - a + h - 1, :d - c + w - 1] = ypad[a:b + h - 1, c:d + w - 1]
        with fft_workers(xp):
            corr = self.fft.irfft2(self.fft.rfft2(buf, axes=(-2, -1)) * self.spectra_conj, s=self.fft_shape,
                                   axes=(-2, -1))
        out = xp.zeros(self.shape, xp.float32)
        for k, (_, _, (a, b), (c, d)) in enumerate(self.nodes):
            out[a:b, c:d] += self.weights[k] * corr[k, :b - a, :d - c]
        return out


def convolve_sv(image, psfs):
    """Blur ``image`` with a spatially-variant PSF grid (linear convolution, zero outside the image).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        NumPy or CuPy image.
    psfs : ndarray, shape (h, w) or (gy, gx, h, w)
        One PSF (shift-invariant blur) or a grid of PSFs at the centres of a gy x gx partition of the
        image, blended with bilinear weights.

    Returns
    -------
    ndarray, float32, shape (H, W), same array module as ``image``.
    """
    xp = array_module(image)
    image = check_image(image)
    return SVConvolution(xp.asarray(psfs), image.shape).forward(image)


def check_image(image, name: str = "image"):
    """Validate a 2-D finite image and return it as float32 (same array module)."""
    xp = array_module(image)
    image = xp.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {image.ndim}-D of shape {image.shape}")
    if min(image.shape) < 2:
        raise ValueError(f"{name} is too small: shape {image.shape}")
    if not bool(xp.all(xp.isfinite(image))):
        raise ValueError(f"{name} contains NaN or inf")
    return image.astype(xp.float32, copy=False)
