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

from fiji_bridge.restoration.backend import array_module, fft_module, fft_workers
from fiji_bridge.validation import real_image_dtype


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


def axis_cells(length: int, centres: np.ndarray) -> list[tuple[int, int, tuple[int, ...]]]:
    """Split ``range(length)`` at the node centres: ``(start, stop, nodes)`` per non-empty interval.

    Inside an interval only the two bracketing nodes (one beyond the first/last node) have non-zero
    tent weight, so every pixel is touched by at most 2 x 2 PSFs.
    """
    g = len(centres)
    bounds = [0, *np.clip(np.floor(centres).astype(int) + 1, 0, length), length]
    return [(int(bounds[j]), int(bounds[j + 1]), tuple(k for k in (j - 1, j) if 0 <= k < g))
            for j in range(g + 1) if bounds[j + 1] > bounds[j]]


class _CellGroup:
    """Cells that share an FFT shape and a term count, processed by batched FFTs."""

    def __init__(self, fft_shape: tuple[int, int], k: int):
        self.fft_shape, self.k = fft_shape, k
        self.cells: list[tuple[int, int, int, int]] = []
        self.nodes: list[int] = []          # node index of each term, k consecutive terms per cell
        self.weights: list = []             # weight patch of each term


class SVConvolution:
    """Linear spatially-variant blur operator on arrays of one shape.

    The image is split into cells between neighbouring grid nodes; in a cell the blur is the sum of at
    most four PSFs applied to the bilinearly weighted cell. Forward: FFT of each weighted cell, products
    with the PSF spectra summed in the frequency domain, one inverse FFT per cell. Adjoint: one FFT per
    cell (with its PSF margin), one inverse FFT per term. Cells of equal FFT shape are batched.

    Parameters
    ----------
    psfs : ndarray, shape (gy, gx, h, w) or (h, w)
        PSF grid (NumPy or CuPy; the operator works in that array module). PSF centres are at index
        ``((h - 1) // 2, (w - 1) // 2)`` as in ``scipy.signal.convolve(..., mode='same')``.
    shape : tuple of int
        Shape (H, W) of the arrays the operator acts on.
    centres : tuple of ndarray, optional
        Node coordinates (rows, cols) in pixels, increasing, possibly outside the array; default:
        centres of a regular gy x gx partition.
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
        cy, cx = np.asarray(cy, dtype=np.float64), np.asarray(cx, dtype=np.float64)
        wy, wx = tent_weights(shape[0], cy), tent_weights(shape[1], cx)
        groups: dict[tuple[int, int, int], _CellGroup] = {}
        for a, b, ny in axis_cells(shape[0], cy):
            for c, d, nx in axis_cells(shape[1], cx):
                fft_shape = (fft_length(b - a + h - 1), fft_length(d - c + w - 1))
                key = (*fft_shape, len(ny) * len(nx))
                group = groups.setdefault(key, _CellGroup(fft_shape, key[2]))
                group.cells.append((a, b, c, d))
                for i in ny:
                    for j in nx:
                        group.nodes.append(i * gx + j)
                        group.weights.append(xp.asarray(np.outer(wy[i, a:b], wx[j, c:d]), dtype=xp.float32))
        self.groups = list(groups.values())
        flat = psfs.reshape(gy * gx, h, w)
        with fft_workers(xp):
            for g in self.groups:
                spectra = self.fft.rfft2(flat, s=g.fft_shape, axes=(-2, -1))
                g.spectra = spectra[xp.asarray(g.nodes)]
                g.spectra_conj = g.spectra.conj().reshape(len(g.cells), g.k, *g.spectra.shape[1:])
                g.buf_terms = xp.zeros((len(g.nodes), *g.fft_shape), xp.float32)
                g.buf_cells = xp.zeros((len(g.cells), *g.fft_shape), xp.float32)
        oy, ox = (h - 1) // 2, (w - 1) // 2
        ry, rx = observed if observed is not None else (slice(0, shape[0]), slice(0, shape[1]))
        # observed region in the coordinates of the full linear-convolution result
        self._out = (slice(oy + ry.start, oy + ry.stop), slice(ox + rx.start, ox + rx.stop))

    def _padded(self) -> tuple[int, int]:
        return self.shape[0] + self.psf_shape[0] - 1, self.shape[1] + self.psf_shape[1] - 1

    def forward(self, x):
        """``H x``: blur ``x`` (shape ``self.shape``); returns the observed region."""
        xp, fft, (h, w) = self.xp, self.fft, self.psf_shape
        out = xp.zeros(self._padded(), xp.float32)
        for g in self.groups:
            buf = g.buf_terms
            for t, weight in enumerate(g.weights):
                a, b, c, d = g.cells[t // g.k]
                xp.multiply(weight, x[a:b, c:d], out=buf[t, :b - a, :d - c])
            with fft_workers(xp):
                spec = fft.rfft2(buf, axes=(-2, -1))
                spec *= g.spectra
                cells = spec.reshape(len(g.cells), g.k, *spec.shape[1:]).sum(axis=1) if g.k > 1 else spec
                full = fft.irfft2(cells, s=g.fft_shape, axes=(-2, -1))
            for n, (a, b, c, d) in enumerate(g.cells):
                out[a:b + h - 1, c:d + w - 1] += full[n, :b - a + h - 1, :d - c + w - 1]
        return out[self._out]

    def adjoint(self, y):
        """``Hᵀ y``: correlate ``y`` (observed shape) with each node's PSF, blend with the node weights."""
        xp, fft, (h, w) = self.xp, self.fft, self.psf_shape
        ypad = xp.zeros(self._padded(), xp.float32)
        ypad[self._out] = y
        out = xp.zeros(self.shape, xp.float32)
        for g in self.groups:
            buf = g.buf_cells
            for n, (a, b, c, d) in enumerate(g.cells):
                buf[n, :b - a + h - 1, :d - c + w - 1] = ypad[a:b + h - 1, c:d + w - 1]
            with fft_workers(xp):
                spec = fft.rfft2(buf, axes=(-2, -1))
                terms = (spec[:, None] * g.spectra_conj).reshape(len(g.nodes), *spec.shape[1:])
                corr = fft.irfft2(terms, s=g.fft_shape, axes=(-2, -1))
            for t, weight in enumerate(g.weights):
                a, b, c, d = g.cells[t // g.k]
                out[a:b, c:d] += weight * corr[t, :b - a, :d - c]
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
    ndarray, float32, shape (H, W), same array module as ``image``; non-negative where ``image`` is
    (FFT rounding below zero is clamped), and ``convolve_sv(k·image) == k·convolve_sv(image)``: the
    image is divided by a power of two near its maximum (exact) so that no float32 overflow or
    underflow occurs inside the FFTs, and multiplied back.
    """
    xp = array_module(image)
    image = check_image(image)
    e = unit_scale(xp, image)
    out = SVConvolution(xp.asarray(psfs), image.shape).forward(scaled(xp, image, -e))
    if float(image.min()) >= 0:     # PSFs are non-negative: so is the blur of a non-negative image
        out = xp.maximum(out, 0)
    return scaled(xp, out, e)


def unit_scale(xp, image) -> int:
    """Exponent ``e`` such that ``image · 2^-e`` has its largest magnitude in [0.5, 1) (0 for an all-zero
    image). Computed in float64, so any finite float32 image is covered; scaling by a power of two is
    exact, which makes results for inputs ``k·y`` with ``k`` a power of two identical up to that factor."""
    peak = float(xp.abs(image).max())
    return int(np.frexp(peak)[1]) if peak > 0 else 0


def scaled(xp, x, e: int):
    """``x · 2^e`` in float32, exact (``ldexp``); magnitudes beyond the float32 range saturate at its maximum."""
    top = np.finfo(np.float32).max
    with np.errstate(over="ignore", under="ignore"):
        out = xp.ldexp(x, xp.int32(e)).astype(xp.float32, copy=False)
    return xp.clip(out, -top, top) if e > 0 else out


def check_image(image, name: str = "image"):
    """Validate a 2-D finite image and return it as float32 (same array module)."""
    xp = array_module(image)
    image = xp.asarray(image)
    real_image_dtype(name, image.dtype)           # bool, complex, text: refused, never silently converted
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {image.ndim}-D of shape {image.shape}")
    if min(image.shape) < 2:
        raise ValueError(f"{name} is too small: shape {image.shape}")
    if not bool(xp.all(xp.isfinite(image))):
        raise ValueError(f"{name} contains NaN or inf")
    with np.errstate(over="ignore"):
        out = image.astype(xp.float32, copy=False)
    if out.dtype != image.dtype and image.dtype.kind == "f" and not bool(xp.all(xp.isfinite(out))):
        raise ValueError(f"{name} has values beyond the float32 range (magnitudes above 3.4e38)")
    return out
