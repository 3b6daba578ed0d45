"""Resampling images between samplings of the diffraction limit (``pixel·NA/λ``), shared by training and inference.

A PSF-map model reads images at its own sampling. Camera images at another sampling are brought there by
`resample`: pixel-area aligned (output pixel ``i`` covers the same field as the input pixels it comes
from), Gaussian anti-aliasing when shrinking (σ = (1/zoom − 1)/2 output pixels, scikit-image's rule), then
separable linear interpolation. Training synthesis uses the same function on simulated camera images, so
the network learns exactly the resampling it meets at inference.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def area_coordinates(n_in: int, n_out: int) -> np.ndarray:
    """Input coordinates of the ``n_out`` output pixel centres when both grids span the same field."""
    return (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5


def interpolate_linear(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional ``coords`` along ``axis``; coordinates beyond the first or
    last sample take the edge value."""
    n = a.shape[axis]
    if n == 1:
        return np.repeat(a, len(coords), axis=axis)
    c = np.clip(coords, 0, n - 1)
    i0 = np.minimum(np.floor(c).astype(np.intp), n - 2)
    t = (c - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = -1
    t = t.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - t) + np.take(a, i0 + 1, axis=axis) * t


#: Anti-aliasing Gaussians are cut at this many σ (scipy's ``truncate``).
TRUNCATE = 3.0


def antialias_sigma(n_in: int, n_out: int) -> float:
    """σ (input pixels) of the Gaussian applied before shrinking ``n_in`` samples to ``n_out`` (as
    skimage.transform.rescale), or 0 where there is none to apply: when growing, and when the kernel cut at
    `TRUNCATE` σ keeps only its centre tap (σ < 1/6, shrinking by less than 1.33x), where scipy's filter is
    the identity but still a full pass over the image (35 ms of a 1024² map at 0.9x, measured)."""
    if n_out >= n_in:
        return 0.0
    sigma = (n_in / n_out - 1) / 2
    return sigma if int(TRUNCATE * sigma + 0.5) > 0 else 0.0


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample the last two axes of ``image`` to ``shape`` over the same field of view.

    Parameters
    ----------
    image : ndarray, shape (..., H, W)
        Intensities (any real dtype).
    shape : (h, w)
        Output size of the last two axes.

    Returns
    -------
    ndarray, shape (..., h, w), float32. The mean intensity is preserved (up to edge effects).
    """
    out = np.asarray(image, dtype=np.float32)
    for axis, n_out in zip((-2, -1), shape):
        n_in = out.shape[axis]
        if n_out == n_in:
            continue
        sigma = antialias_sigma(n_in, n_out)
        if sigma:              # anti-aliasing before shrinking, as skimage.transform.rescale
            out = ndimage.gaussian_filter1d(out, sigma, axis=axis, mode="reflect", truncate=TRUNCATE)
        out = interpolate_linear(out, area_coordinates(n_in, n_out), axis=out.ndim + axis)
    return out


def resample_rows(image, shape: tuple[int, int], r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of ``resample(image, shape)``, equal to them, reading only the input rows they need.

    ``image`` (H, W) may be lazy (anything with ``.shape`` and row slicing: a memory map, a zarr array,
    `fiji_bridge.io.tiff.LazyImage`), so a map of an image larger than memory reads it band by band. The
    rows read are those the interpolation touches, widened by the anti-aliasing kernel's radius when
    shrinking (the Gaussian then sees the same neighbours as on the whole image, or the same reflected edge)."""
    n_in, n_out = int(image.shape[0]), int(shape[0])
    if n_out == n_in:
        return resample(np.asarray(image[r0:r1]), (r1 - r0, shape[1]))
    c = np.clip(area_coordinates(n_in, n_out)[r0:r1], 0, n_in - 1)
    lo, hi = int(np.floor(c[0])), min(int(np.floor(c[-1])) + 2, n_in)
    sigma = antialias_sigma(n_in, n_out)
    pad = int(TRUNCATE * sigma + 0.5)    # scipy's kernel radius
    a, b = max(lo - pad, 0), min(hi + pad, n_in)
    band = np.asarray(image[a:b], dtype=np.float32)
    if sigma:
        if a == 0 and b == n_in:
            band = ndimage.gaussian_filter1d(band, sigma, axis=0, mode="reflect", truncate=TRUNCATE)
        else:                            # reflect at the image's own edges only: filter a reflected extension
            top, bottom = pad if a == 0 else 0, pad if b == n_in else 0
            ext = np.pad(band, ((top, bottom), (0, 0)), mode="symmetric")
            band = ndimage.gaussian_filter1d(ext, sigma, axis=0, mode="reflect", truncate=TRUNCATE)[top:top + b - a]
    rows = interpolate_linear(band, area_coordinates(n_in, n_out)[r0:r1] - a, axis=0) if n_in > 1 else \
        np.repeat(band, r1 - r0, axis=0)
    return resample(rows, (r1 - r0, shape[1]))


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor``×``factor`` blocks of the last two axes (sizes must divide)."""
    *lead, h, w = image.shape
    if h % factor or w % factor:
        raise ValueError(f"block_mean: shape {(h, w)} is not a multiple of {factor}")
    return image.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def window_block_means(band: np.ndarray, row_starts: np.ndarray, col_starts: np.ndarray, size: int,
                       factor: int) -> np.ndarray:
    """`block_mean` of every square window ``band[y:y + size, x:x + size]`` (``y`` in ``row_starts``, ``x`` in
    ``col_starts``, row-major), shape (len(row_starts)·len(col_starts), size // factor, size // factor), without
    cutting the windows out one by one: block sums are formed once per phase ``(y mod factor, x mod factor)``
    for the whole band (the map's windows overlap), from strided slices added together (numpy's reduction over
    a length-3 axis took 19 ms of a 1024² map, this 7), with the same rounding as numpy's mean over the rows
    and then the columns of each block."""
    height, width = band.shape
    if size % factor:
        raise ValueError(f"window_block_means: window size {size} is not a multiple of {factor}")
    p = size // factor
    rs, cs = (np.asarray(v, dtype=np.int64) for v in (row_starts, col_starts))
    for name, v, n in (("rows", rs, height), ("columns", cs, width)):
        if v.size and (v.min() < 0 or v.max() + size > n):
            raise ValueError(f"window_block_means: windows of {size} px at {name} {v.min()}..{v.max()} "
                             f"exceed the band's {n} {name}")
    out = np.empty((len(rs), len(cs), p, p), dtype=np.float32)
    for pr in np.unique(rs % factor):
        n = (height - pr) // factor
        rows = band[pr:pr + n * factor:factor].astype(np.float32)         # means of `factor` rows from phase pr
        for q in range(1, factor):
            rows += band[pr + q:pr + n * factor:factor]
        rows /= factor                   # summed in order, then divided: numpy's mean over the rows, bit for bit
        for pc in np.unique(cs % factor):
            m = (width - pc) // factor
            blocks = rows[:, pc:pc + m * factor:factor].copy()
            for q in range(1, factor):
                blocks += rows[:, pc + q:pc + m * factor:factor]
            blocks /= factor
            ii, jj = np.flatnonzero(rs % factor == pr), np.flatnonzero(cs % factor == pc)
            for i in ii:
                r0 = (int(rs[i]) - pr) // factor
                for j in jj:
                    c0 = (int(cs[j]) - pc) // factor
                    out[i, j] = blocks[r0:r0 + p, c0:c0 + p]
    return out.reshape(-1, p, p)
