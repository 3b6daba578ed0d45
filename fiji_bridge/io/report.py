"""Report figure: input, restored image, parameter maps and the PSF grid."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fiji_bridge.io.atomic import atomic_path
from fiji_bridge.estimation.psf_map import PSFMap


def psf_montage(psfs: np.ndarray, gap: int = 1) -> np.ndarray:
    """Tile a (gy, gx, s, s) PSF grid into one image, each PSF scaled to its own maximum."""
    psfs = np.asarray(psfs, dtype=np.float32)
    if psfs.ndim != 4:
        raise ValueError(f"psfs: need a (gy, gx, h, w) grid, got shape {psfs.shape}")
    gy, gx, s, _ = psfs.shape
    out = np.zeros((gy * (s + gap) - gap, gx * (s + gap) - gap), np.float32)
    for i, j in np.ndindex(gy, gx):
        p = psfs[i, j]
        out[i * (s + gap):i * (s + gap) + s, j * (s + gap):j * (s + gap) + s] = p / max(float(p.max()), 1e-12)
    return out


def _limits(img: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(img, [0.5, 99.8])
    return float(lo), float(hi if hi > lo else lo + 1)


def _grid_points(psf_map: PSFMap, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates (x, y) of the map patches where ``mask`` is True."""
    yy, xx = np.nonzero(mask)
    return (np.interp(xx, np.arange(len(psf_map.centres_x)), psf_map.centres_x),
            np.interp(yy, np.arange(len(psf_map.centres_y)), psf_map.centres_y))


def reliability_summary(psf_map: PSFMap) -> str:
    """The σ panel's title: the informative share, and, of the informative patches, those beyond the model's
    range (marked x) and those too uncertain to read that took their neighbours' estimates (marked ·)."""
    informative = psf_map.informative
    n = max(int(informative.sum()), 1)
    text = f"{psf_map.names[0]} σ ({psf_map.units[0]}); informative {informative.mean():.0%}"
    out = psf_map.out_of_range
    if out.any():
        text += f", beyond range {out.sum() / n:.0%} (x)"
    if psf_map.filled.any():
        text += f", filled from neighbours {psf_map.filled.sum() / n:.0%} (·)"
    return text


def write_report(path: str | os.PathLike, image: np.ndarray, restored: np.ndarray, psf_map: PSFMap,
                 psfs: np.ndarray, title: str = "") -> Path:
    """Save a PNG with input, output, every parameter map, the predicted σ of the first parameter (with the
    informative share, the patches beyond the model's range and those filled from their neighbours for a large
    σ; `reliability_summary`) and the PSF grid (atomic)."""
    from fiji_bridge.validation import optional_import
    matplotlib = optional_import("matplotlib", "report", "the report figure")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_maps = len(psf_map.names) + 1
    cols = max(3, n_maps)
    fig, axes = plt.subplots(2, cols, figsize=(3.4 * cols, 7), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[0, 3:]:
        ax.axis("off")
    extent = (0, image.shape[1], image.shape[0], 0)
    axes[0, 0].imshow(image, cmap="gray", vmin=_limits(image)[0], vmax=_limits(image)[1])
    axes[0, 0].set_title("input")
    axes[0, 1].imshow(restored, cmap="gray", vmin=_limits(restored)[0], vmax=_limits(restored)[1])
    axes[0, 1].set_title("restored")
    axes[0, 2].imshow(psf_montage(psfs) ** 0.5, cmap="magma")
    axes[0, 2].set_title(f"PSF grid {psfs.shape[0]}x{psfs.shape[1]} (sqrt)")
    for k, (name, unit) in enumerate(zip(psf_map.names, psf_map.units)):
        ax = axes[1, k]
        im = ax.imshow(psf_map.parameters[k], cmap="viridis", extent=extent, interpolation="nearest")
        ax.set_title(f"{name} ({unit})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes[1, n_maps:]:
        ax.axis("off")
    # the predicted σ of the first parameter (defocus) rather than the information confidence, which is ~1
    # everywhere on real images (an all-white panel); the informative / out-of-range / filled shares in the title
    ax = axes[1, n_maps - 1]
    sigma = np.asarray(psf_map.std[0], np.float32)
    im = ax.imshow(sigma, cmap="inferno", vmin=0, vmax=max(float(sigma.max()), 1e-6), extent=extent,
                   interpolation="nearest")
    out = psf_map.out_of_range
    if out.any():
        ax.scatter(*_grid_points(psf_map, out), marker="x", s=12, c="cyan", linewidths=0.8)
    if psf_map.filled.any():
        ax.scatter(*_grid_points(psf_map, psf_map.filled), marker=".", s=10, c="white")
    ax.set_title(reliability_summary(psf_map), fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path
