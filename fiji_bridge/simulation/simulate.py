"""Test specimens blurred by known spatially-variant PSF fields (paper §3.1: quadrants; tilted plane)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fiji_bridge import validation
from fiji_bridge.estimation.model_config import ModelConfig
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.estimation.psf_map import default_stride, patch_centres
from fiji_bridge.simulation.specimens import Generator, mixture
from fiji_bridge.restoration.sv_convolution import SVConvolution, node_centres


@dataclass
class Simulation:
    """A blurred, noisy image with its ground truth."""

    blurred: np.ndarray        # (H, W) float32 photon counts
    truth: np.ndarray          # (H, W) float32 sharp specimen, same scale
    true_map: np.ndarray       # (P, my, mx) true parameters at the patch centres of `centres_y/x`
    centres_y: np.ndarray
    centres_x: np.ndarray
    names: list[str]
    quadrant_params: np.ndarray | None = None   # (2, 2, P) for the quadrant case


def _true_map_grid(shape, cfg: ModelConfig, stride: int | None):
    return patch_centres(shape, cfg.patch_size, stride or default_stride(cfg.patch_size))


def blur_beyond_field(truth: np.ndarray, psfs: np.ndarray) -> np.ndarray:
    """Blur a specimen that extends beyond the field of view (mirror extension), as a camera sees it:
    zero extension would darken the borders, a structure real images do not have. ``psfs`` is one PSF
    or a grid whose nodes are the centres of a regular partition of ``truth``."""
    grid = psfs if psfs.ndim == 4 else psfs[None, None]
    m = grid.shape[-1] // 2
    centres = (node_centres(truth.shape[0], grid.shape[0]) + m, node_centres(truth.shape[1], grid.shape[1]) + m)
    padded = np.pad(truth, m, mode="reflect")
    return SVConvolution(grid, padded.shape, centres=centres).forward(padded)[m:-m, m:-m]


#: Largest simulated image side: a 4096² simulation needs about 2 GB.
MAX_SIZE = 4096
#: Largest peak photon count (Poisson sampling needs counts far below 2^63).
MAX_PHOTONS = 1e12


def check_simulation(cfg: ModelConfig, seed, shape, photons) -> tuple[int, tuple[int, int], float]:
    """Validated ``(seed, shape, photons)`` of a simulation; ValueError naming the parameter otherwise
    (before anything is allocated). Sides run from one model patch to `MAX_SIZE` pixels."""
    seed = validation.integer("seed", seed, minimum=0)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise ValueError(f"shape must be two integers (rows, cols), got {shape!r}")
    shape = tuple(validation.integer("size", n, minimum=cfg.patch_size, maximum=MAX_SIZE) for n in shape)
    photons = validation.number("photons", photons, positive=True, maximum=MAX_PHOTONS)
    return seed, shape, photons


def _specimen(rng: np.random.Generator, shape, photons: float, specimen: Generator | None = None) -> np.ndarray:
    """The sharp specimen in photons: ``specimen(shape, rng)`` (values in [0, 1]; default `mixture`) x ``photons``."""
    return ((specimen or mixture)(shape, rng) * photons).astype(np.float32)


def simulate_quadrants(cfg: ModelConfig, seed: int = 0, shape=(512, 512), photons: float = 500.0,
                       stride: int | None = None, blank_quadrant: bool = False,
                       specimen: Generator | None = None) -> Simulation:
    """Each quadrant blurred by its own random Zernike PSF drawn from the model's ranges.

    ``blank_quadrant`` empties the lower-right quadrant (a background-only region without blur
    information). The true map holds each patch centre's quadrant parameters. ``specimen`` draws the sharp
    specimen (a `fiji_bridge.simulation.specimens` generator such as ``GENERATORS["beads"]``; default `mixture`).
    """
    seed, shape, photons = check_simulation(cfg, seed, shape, photons)
    rng = np.random.default_rng(seed)
    h, w = shape
    truth = _specimen(rng, shape, photons, specimen) + 0.05 * photons
    if blank_quadrant:
        truth[h // 2:, w // 2:] = 0.05 * photons
    params = np.stack([rng.uniform(q.low, q.high, 4) for q in cfg.parameters], -1).reshape(2, 2, -1)
    psfs = psf_batch(cfg.optics, cfg.nolls, params.reshape(4, -1), cfg.psf_size)
    blurred = np.zeros(shape, np.float32)
    for k, (qy, qx) in enumerate(np.ndindex(2, 2)):
        region = (slice(qy * (h // 2), (qy + 1) * (h // 2) if qy == 0 else h),
                  slice(qx * (w // 2), (qx + 1) * (w // 2) if qx == 0 else w))
        blurred[region] = blur_beyond_field(truth, psfs[k])[region]
    blurred = rng.poisson(np.clip(blurred, 0, None)).astype(np.float32)
    cy, cx = _true_map_grid(shape, cfg, stride)
    qy, qx = (cy >= h // 2).astype(int), (cx >= w // 2).astype(int)
    true_map = np.moveaxis(params[qy[:, None], qx[None, :]], -1, 0)
    return Simulation(blurred, truth, true_map.astype(np.float32), cy, cx, cfg.names, params)


def simulate_tilted(cfg: ModelConfig, seed: int = 0, shape=(512, 512), photons: float = 500.0,
                    stride: int | None = None, nodes: int = 8, specimen: Generator | None = None) -> Simulation:
    """A tilted specimen plane: defocus rises linearly from left to right across the model's range
    (in focus at the left edge); other parameters are zero. ``specimen`` as in `simulate_quadrants`."""
    seed, shape, photons = check_simulation(cfg, seed, shape, photons)
    rng = np.random.default_rng(seed)
    truth = _specimen(rng, shape, photons, specimen) + 0.05 * photons
    d = cfg.parameters[cfg.names.index("defocus")]
    xs = (np.arange(nodes) + 0.5) * shape[1] / nodes - 0.5
    defocus = d.low + (d.high - d.low) * np.clip(xs / (shape[1] - 1), 0, 1)
    coeffs = np.zeros((nodes, len(cfg.parameters)))
    coeffs[:, cfg.names.index("defocus")] = defocus
    psfs = psf_batch(cfg.optics, cfg.nolls, coeffs, cfg.psf_size)[None]
    blurred = rng.poisson(np.clip(blur_beyond_field(truth, psfs), 0, None)).astype(np.float32)
    cy, cx = _true_map_grid(shape, cfg, stride)
    true_map = np.zeros((len(cfg.parameters), len(cy), len(cx)), np.float32)
    true_map[cfg.names.index("defocus")] = np.interp(cx, xs, defocus)[None, :]
    return Simulation(blurred, truth, true_map, cy, cx, cfg.names)
