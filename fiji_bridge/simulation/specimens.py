"""Procedural sharp specimen images for training-data synthesis.

Every generator has the signature ``fn(shape, rng) -> np.ndarray`` and returns a
float32 image in [0, 1] that is the *ground-truth object*, i.e. before any
optical blur is applied.  Feature scale, contrast and a dim background level
are randomised per call, so one generator covers a family of specimens.  All
randomness comes from ``rng``, which makes a specimen fully reproducible from
its seed (see :mod:`training.sources` for the train / held-out seed ranges).

Generators
----------
cells
    Elliptical cells with textured cytoplasm, puncta and nuclei.
filaments
    Curved, crossing fibres (microtubule / actin-like) of random width.
beads
    Sub-pixel point sources, sparse or dense, a few slightly resolved.
membranes
    Warped Voronoi contours, like membrane-stained tissue outlines.
mixture
    Weighted sum of two or three of the above.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from fiji_bridge.validation import optional_import

Shape = tuple[int, int]
Generator = Callable[[Shape, np.random.Generator], np.ndarray]


# --------------------------------------------------------------------------
# Shared rendering steps
# --------------------------------------------------------------------------

def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Draw from a log-uniform distribution, natural for scale factors."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _splat(shape: Shape, y: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Deposit point weights at sub-pixel positions with bilinear weights.

    Keeps sub-pixel positions (beads, line centres) instead of snapping them
    to the grid, and accumulates additively, so crossings add up as in
    fluorescence.
    """
    h, wd = shape
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy = y - y0
    fx = x - x0
    out = np.zeros(h * wd, dtype=np.float64)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                       (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy = y0 + dy
        xx = x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
        out += np.bincount(yy[ok] * wd + xx[ok], weights=(w * wt)[ok], minlength=h * wd)
    return out.reshape(shape)


def _disk_kernel(radius: float) -> np.ndarray:
    """Binary disk normalised to unit peak on a line (chord length 2r).

    Convolving a centre line with it gives the projected profile of a solid
    tube of that radius, which is the object, not a blur.
    """
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = (yy ** 2 + xx ** 2 <= radius ** 2 + 0.25).astype(np.float64)
    return k / max(2.0 * radius, 1.0)


def _thicken(img: np.ndarray, radius: float) -> np.ndarray:
    """Give splatted points/lines a solid radius (no-op below one pixel)."""
    if radius < 1.0:
        return img
    return ndimage.convolve(img, _disk_kernel(radius), mode="constant")


def _smooth_field(shape: Shape, rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Slowly varying field in [0, 1], from a coarse random grid zoomed up."""
    coarse = rng.random((cells, cells))
    field = ndimage.zoom(coarse, (shape[0] / cells, shape[1] / cells), order=1)
    field = field[:shape[0], :shape[1]]
    if field.shape != shape:  # zoom can round one pixel short
        field = np.pad(field, [(0, shape[0] - field.shape[0]), (0, shape[1] - field.shape[1])],
                       mode="edge")
    return field


def _texture(shape: Shape, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Band-limited random texture in [0, 1] with feature size ``sigma``."""
    t = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    t -= t.min()
    return t / max(t.max(), 1e-12)


def _finish(structure: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a non-negative structure image to [0, 1] with random contrast.

    Adds a dim, slightly uneven background so that images never sit on an
    exact zero floor, which would make defocus trivially visible as halo on
    black.
    """
    # Normalise by a high quantile of the foreground, not the max, so a few
    # overlaps (crossings, bead clusters) saturate instead of dimming the rest.
    fg = structure[structure > 0]
    peak = float(np.percentile(fg, 99.5)) if fg.size else 0.0
    s = np.minimum(structure / peak, 1.0) if peak > 0 else structure
    bg = rng.uniform(0.0, 0.2)
    bg_map = bg * (0.7 + 0.6 * _smooth_field(s.shape, rng))
    amp = rng.uniform(0.4, 1.0 - bg)
    return np.clip(bg_map + amp * s, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------
# Structure renderers (non-negative, unnormalised, no background)
# --------------------------------------------------------------------------

def _render_cells(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    scale = _log_uniform(rng, 0.5, 2.0)
    mean_r = 14.0 * scale
    # Density from sparse (isolated cells) to confluent.
    n = max(1, int(rng.uniform(0.2, 1.0) * h * w / (np.pi * mean_r ** 2)))
    cyto = np.zeros(shape)
    nuc = np.zeros(shape)
    # Nuclei brighter (DNA stain) or darker (e.g. cytoplasmic stain) than cytoplasm.
    nuc_gain = rng.choice([rng.uniform(1.3, 2.5), rng.uniform(0.1, 0.6)])
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry = mean_r * rng.uniform(0.6, 1.5)
        rx = ry * rng.uniform(0.5, 1.0)
        rot = rng.uniform(-np.pi, np.pi)
        level = rng.uniform(0.3, 1.0)
        draw = optional_import("skimage.draw", "simulation", "simulating specimens")
        rr, cc = draw.ellipse(cy, cx, ry, rx, shape=shape, rotation=rot)
        cyto[rr, cc] = level  # later cells occlude earlier ones
        f = rng.uniform(0.3, 0.55)
        off = rng.uniform(-0.25, 0.25, 2) * np.array([ry, rx])
        rr, cc = draw.ellipse(cy + off[0], cx + off[1], ry * f, rx * f * rng.uniform(0.8, 1.2),
                              shape=shape, rotation=rot + rng.uniform(-0.5, 0.5))
        nuc[rr, cc] = level * nuc_gain
    inside = cyto > 0
    tex = 0.6 + 0.8 * _texture(shape, rng, sigma=rng.uniform(0.7, 2.0))
    img = cyto * tex
    # Puncta (vesicles) inside the cytoplasm: the finest, point-like detail.
    n_p = int(inside.sum() * rng.uniform(0.0, 0.01))
    if n_p:
        py, px = rng.uniform(0, h, n_p), rng.uniform(0, w, n_p)
        keep = inside[py.astype(int), px.astype(int)]
        img += _splat(shape, py[keep], px[keep], rng.uniform(0.3, 1.0, keep.sum()))
    img = np.where(nuc > 0, nuc * (0.8 + 0.4 * tex), img)
    return img


def _render_filaments(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    scale = _log_uniform(rng, 0.5, 2.0)
    n = int(rng.integers(5, 50))
    ds = 0.5  # half-pixel steps keep the splatted line gap-free
    # Group filaments by radius class so each class needs a single convolution.
    radii = (0.0, 1.0, 1.5, 2.5)
    layers = [([], [], []) for _ in radii]
    for _ in range(n):
        length = rng.uniform(0.3, 1.5) * max(h, w)
        m = int(length / ds)
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        # Curvature as a random walk: persistence length varies per fibre.
        kappa = rng.normal(0, 0.004 / scale) + np.cumsum(rng.normal(0, 0.0008 / scale, m))
        theta = rng.uniform(0, 2 * np.pi) + np.cumsum(kappa * ds)
        y = y0 + np.cumsum(np.sin(theta) * ds)
        x = x0 + np.cumsum(np.cos(theta) * ds)
        k = int(rng.choice(len(radii), p=(0.45, 0.25, 0.2, 0.1)))
        layers[k][0].append(y)
        layers[k][1].append(x)
        layers[k][2].append(np.full(m, rng.uniform(0.3, 1.0) * ds))
    img = np.zeros(shape)
    for radius, (ys, xs, ws) in zip(radii, layers):
        if ys:
            lines = _splat(shape, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws))
            img += _thicken(lines, radius * min(scale, 1.5))
    return img


def _render_beads(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    area = h * w / 256 ** 2
    dense = rng.random() < 0.5
    n = int(area * (rng.uniform(300, 3000) if dense else rng.uniform(30, 200)))
    y, x = rng.uniform(0, h, n), rng.uniform(0, w, n)
    # Log-normal brightness: bead batches and aggregates span a wide range.
    amp = rng.lognormal(0.0, 0.4, n)
    img = _splat(shape, y, x, amp)
    # A minority of resolved beads (> diffraction limit) with a solid radius.
    big = rng.random(n) < rng.uniform(0.0, 0.2)
    if big.any():
        radius = rng.uniform(1.0, 3.0)
        img += _thicken(_splat(shape, y[big], x[big], amp[big]), radius)
    return img


def _render_membranes(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    scale = _log_uniform(rng, 0.5, 2.0)
    cell = 30.0 * scale
    n = max(2, int(h * w / cell ** 2 * rng.uniform(0.6, 1.4)))
    seeds = np.ones(shape, dtype=bool)
    seeds[rng.integers(0, h, n), rng.integers(0, w, n)] = False
    _, (iy, ix) = ndimage.distance_transform_edt(seeds, return_indices=True)
    labels = iy * w + ix
    # Warp the Voronoi partition so cell outlines are wavy, not polygonal.
    amp = rng.uniform(0.0, 0.25) * cell
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    wy = (_smooth_field(shape, rng, 8) - 0.5) * 2 * amp
    wx = (_smooth_field(shape, rng, 8) - 0.5) * 2 * amp
    labels = ndimage.map_coordinates(labels, [np.clip(yy + wy, 0, h - 1), np.clip(xx + wx, 0, w - 1)],
                                     order=0, mode="nearest")
    segmentation = optional_import("skimage.segmentation", "simulation", "simulating specimens")
    edges = segmentation.find_boundaries(labels, mode="inner").astype(np.float64)
    edges *= 0.4 + 0.6 * _smooth_field(shape, rng, 12)  # uneven staining along contours
    img = _thicken(edges, rng.choice([0.0, 0.0, 1.0, 1.5]))
    # Faint per-cell interior level (tissue autofluorescence / counterstain).
    interior = rng.uniform(0.0, 0.25, labels.max() + 1)[labels]
    return np.maximum(img, interior * img.max())


_RENDERERS: dict[str, Callable[[Shape, np.random.Generator], np.ndarray]] = {
    "cells": _render_cells,
    "filaments": _render_filaments,
    "beads": _render_beads,
    "membranes": _render_membranes,
}


# --------------------------------------------------------------------------
# Public generators
# --------------------------------------------------------------------------

def cells(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Cells with nuclei, textured cytoplasm and puncta.

    Parameters
    ----------
    shape : tuple of int
        Output ``(rows, cols)``.
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    numpy.ndarray
        float32 image in [0, 1].
    """
    return _finish(_render_cells(shape, rng), rng)


def filaments(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Curved, crossing fibres of random width, curvature and brightness.

    Parameters
    ----------
    shape : tuple of int
        Output ``(rows, cols)``.
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    numpy.ndarray
        float32 image in [0, 1].
    """
    return _finish(_render_filaments(shape, rng), rng)


def beads(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Sub-pixel point-like beads, sparse or dense.

    Parameters
    ----------
    shape : tuple of int
        Output ``(rows, cols)``.
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    numpy.ndarray
        float32 image in [0, 1].
    """
    return _finish(_render_beads(shape, rng), rng)


def membranes(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Thin closed contours of a warped Voronoi tiling (tissue outlines).

    Parameters
    ----------
    shape : tuple of int
        Output ``(rows, cols)``.
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    numpy.ndarray
        float32 image in [0, 1].
    """
    return _finish(_render_membranes(shape, rng), rng)


def mixture(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Weighted sum of two or three distinct specimen types.

    Parameters
    ----------
    shape : tuple of int
        Output ``(rows, cols)``.
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    numpy.ndarray
        float32 image in [0, 1].
    """
    names = rng.choice(sorted(_RENDERERS), size=int(rng.integers(2, 4)), replace=False)
    img = np.zeros(shape)
    for name in names:
        part = _RENDERERS[str(name)](shape, rng)
        img += rng.uniform(0.3, 1.0) * part / max(float(part.max()), 1e-12)
    return _finish(img, rng)


GENERATORS: dict[str, Generator] = {
    "cells": cells,
    "filaments": filaments,
    "beads": beads,
    "membranes": membranes,
    "mixture": mixture,
}
