"""Stacks: what the T, Z and C axes of a hyperstack mean to semi-blind deconvolution, and the streaming
run over their planes (`deconvolve_stack` for arrays, `process_stack_file` for files).

Every YX plane is deconvolved as a 2-D image (`fiji_bridge.pipeline.run`) with PSFs from a map; the axes
decide where each plane's map comes from:

* **C, channels** — the blur comes from where the specimen is (its depth, the aberrations of the path),
  which all channels share. Zernike coefficients in waves scale as 1/λ for one optical path difference
  (``c(λ2) = c(λ1)·λ1/λ2``: a longer wavelength sees the same depth as less defocus), so the maps of all
  channels are brought to the path difference in µm (``c·λ``), combined into one *physical* map, and each
  channel's PSFs are rendered from it at its own emission wavelength. ``channels="best"`` (default) takes
  the map of the channel with the most photons (estimated from its noise) for all; ``"joint"`` averages
  the channels' maps weighted by confidence / predicted variance; ``"independent"`` estimates each channel
  alone. "best" is the default because the network's estimates are biased low when a channel's sampling
  (pixel·NA/λ) is far from the model's, a bias its predicted σ does not show, so averaging can pull a
  good channel's map towards a worse one (measured in ``tests/test_stacks.py``).
* **T, time-lapse** — ``frames="smooth"`` (default) estimates a map per frame and smooths the physical
  maps over time with a Gaussian of ``frame_sigma`` frames (weighted as above), so maps follow slow drift
  without flicker; ``"single"`` uses one map (the weighted mean over all frames) for every frame;
  ``"independent"`` leaves each frame's map alone. The result records the flicker (RMS change of defocus
  from one frame to the next, waves) before and after.
* **Z** — the planes of a z-stack are independent 2-D images, each with its own map. This is *not* 3-D
  deconvolution: light from other planes is not reassigned.

Planes are read and written one at a time (a map per plane is small), so memory is one plane and its
result, whatever the stack size. Iterations/TV chosen automatically are chosen once per channel, from
its first plane, so that all frames are restored alike.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from fiji_bridge.estimation.psf_map import PSFMap, estimate_psf_map, psf_size_for
from fiji_bridge.io.ome import FileOptics
from fiji_bridge.optics.objectives import objective as objective_preset
from fiji_bridge.optics.parameters import Optics
from fiji_bridge.settings import AUTO, CHANNEL_MODES, FRAME_MODES, RunSettings
from fiji_bridge.validation import Progress

__all__ = ["CHANNEL_MODES", "FRAME_MODES", "StackDeconvolution", "deconvolve_stack", "process_stack_file",
           "map_stack_file", "estimate_stack_maps", "map_stack", "stack_optics", "channel_map", "flicker"]

#: Floor of the predicted σ of the path difference (µm RMS) in the weights of combined maps.
_SIGMA_FLOOR_UM = 0.005


@dataclass
class StackDeconvolution:
    """Result of `deconvolve_stack`: the restored stack (float32, same axes), the map used for each plane
    (key: the plane's index over the leading axes), the optics of each channel and what was chosen."""

    image: np.ndarray | None
    maps: dict[tuple[int, ...], PSFMap]
    optics: list[Optics]
    axes: str
    settings: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ options

def check_modes(channels: str, frames: str, frame_sigma: float) -> None:
    if channels not in CHANNEL_MODES:
        raise ValueError(f"channels must be one of {', '.join(CHANNEL_MODES)}, got {channels!r}")
    if frames not in FRAME_MODES:
        raise ValueError(f"frames must be one of {', '.join(FRAME_MODES)}, got {frames!r}")
    if isinstance(frame_sigma, bool) or not isinstance(frame_sigma, (int, float, np.number)) \
            or not np.isfinite(frame_sigma) or frame_sigma <= 0:
        raise ValueError(f"frame_sigma must be a positive number of frames, got {frame_sigma!r}")


def _check_axes(axes: str, shape: tuple[int, ...]) -> str:
    if not isinstance(axes, str):
        raise ValueError(f"axes must be a string such as 'TCYX', got {axes!r}")
    axes = axes.upper()
    if len(axes) != len(shape) or not axes.endswith("YX") or len(set(axes)) != len(axes) \
            or any(a not in "TZC" for a in axes[:-2]):
        raise ValueError(f"axes must name each of the {len(shape)} dimensions of the image once, ending in YX, "
                         f"with T, Z, C before (e.g. 'TZCYX'); got {axes!r} for shape {shape}")
    return axes


def stack_optics(file: FileOptics | None, model_optics: Optics, n_channels: int = 1, *,
                 objective: str | None = None, na: float | None = None, n: float | None = None,
                 wavelength: float | Sequence[float] | None = None, pixel_size: float | None = None,
                 map_optics: Optics | None = None) -> tuple[list[Optics], dict]:
    """The optics of each channel, and where each value came from.

    Precedence: explicit values > the objective preset (NA and n) > a reused map's optics > the file's
    metadata (OME-XML, SemiBlind's ImageJ Info; `fiji_bridge.io.ome`) > the model's optics. A file's NA of
    1 or more with no immersion index anywhere implies water (NA <= 1.2, n 1.333) or oil (n 1.518): the
    index is recorded as inferred. An explicit NA is used as given (with n from the other sources): an
    NA above n is an error naming both. ``wavelength`` is one emission wavelength (µm) for every channel or one per
    channel; without it the file's channel wavelengths come before a reused map's (the map is converted).
    """
    file = file or FileOptics()
    src: dict[str, str] = {}

    def pick(name, explicit, preset=None, from_map=None, from_file=None):
        for value, where in ((explicit, "given"), (preset, f"objective {objective}"),
                             (from_map, "PSF map"), (from_file, file.sources.get(name, "file metadata"))):
            if value is not None:
                src[name] = where
                return value
        src[name] = "model"
        return getattr(model_optics, name)

    preset_na = preset_n = None
    if objective is not None:
        preset_na, preset_n = objective_preset(str(objective))
    mo = map_optics
    na_v = pick("na", na, preset_na, mo and mo.na, file.na)
    if n is None and preset_n is None and mo is None and file.n is None and na_v >= model_optics.n \
            and src["na"] not in ("given", "model"):
        n_v = 1.333 if na_v <= 1.2 else 1.518
        src["n"] = f"inferred from NA {na_v:g} ({'water' if n_v < 1.4 else 'oil'})"
    else:
        n_v = pick("n", n, preset_n, mo and mo.n, file.n)
    px = pick("pixel_size", pixel_size, None, mo and mo.pixel_size, file.pixel_size)
    if wavelength is not None and not isinstance(wavelength, (int, float, np.number)):
        waves = [float(w) if w is not None else None for w in wavelength]
        if len(waves) != n_channels:
            raise ValueError(f"wavelength: {len(waves)} wavelengths given for {n_channels} channels")
        src["wavelength"] = "given"
    elif wavelength is not None:
        waves, src["wavelength"] = [wavelength] * n_channels, "given"
    else:
        from_file = list(file.wavelengths[:n_channels]) if len(file.wavelengths) >= n_channels else []
        if from_file and all(w is not None for w in from_file):
            waves, src["wavelength"] = from_file, file.sources.get("wavelength", "file metadata")
        elif mo is not None:
            waves, src["wavelength"] = [mo.wavelength] * n_channels, "PSF map"
        else:
            waves, src["wavelength"] = [model_optics.wavelength] * n_channels, "model"
    optics = [Optics(na=na_v, wavelength=w, pixel_size=px, n=n_v) for w in waves]
    return optics, src


# ------------------------------------------------------------------------------------------ map algebra

def _interp(planes: np.ndarray, cy: np.ndarray, cx: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of (K, my, mx) planes on centres (cy, cx) at ys x xs -> (K, len(ys), len(xs))."""
    if len(cy) == len(ys) and len(cx) == len(xs) and np.allclose(cy, ys) and np.allclose(cx, xs):
        return planes.astype(np.float64)
    fy = np.interp(ys, cy, np.arange(len(cy)))
    fx = np.interp(xs, cx, np.arange(len(cx)))
    yy, xx = np.meshgrid(fy, fx, indexing="ij")
    return np.stack([ndimage.map_coordinates(p.astype(np.float64), [yy, xx], order=1, mode="nearest")
                     for p in planes])


@dataclass
class _Physical:
    """A map as optical path difference (µm RMS per Zernike term) on a grid, with weights."""

    opd: np.ndarray          # (P, my, mx)
    weight: np.ndarray       # (P, my, mx)
    confidence: np.ndarray   # (my, mx)


def _physical(m: PSFMap, ys: np.ndarray, xs: np.ndarray) -> _Physical:
    lam = m.optics.wavelength
    opd = _interp(m.parameters, m.centres_y, m.centres_x, ys, xs) * lam
    sigma = _interp(m.std, m.centres_y, m.centres_x, ys, xs) * lam
    conf = _interp(m.confidence[None], m.centres_y, m.centres_x, ys, xs)[0]
    trust = conf
    if m.reliable is not None:              # patches filled from neighbours count little
        trust = conf * np.maximum(_interp(m.reliable[None].astype(np.float32), m.centres_y, m.centres_x, ys, xs)[0],
                                  0.05)
    weight = np.clip(trust, 1e-3, 1.0)[None] / (sigma ** 2 + _SIGMA_FLOOR_UM ** 2)
    return _Physical(opd, weight, conf)


def _combine(items: Sequence[_Physical], coefficients: Sequence[float] | None = None) -> _Physical:
    coefficients = [1.0] * len(items) if coefficients is None else coefficients
    w = sum(k * it.weight for k, it in zip(coefficients, items))
    opd = sum(k * it.weight * it.opd for k, it in zip(coefficients, items)) / np.maximum(w, 1e-30)
    conf = sum(k * it.confidence for k, it in zip(coefficients, items)) / max(sum(coefficients), 1e-30)
    return _Physical(opd, w, conf)


def channel_map(reference: PSFMap, physical: _Physical | None, optics: Optics) -> PSFMap:
    """The map of a channel with ``optics`` (its emission wavelength) from a physical map on the
    ``reference`` map's grid: coefficients = path difference / λ, PSF size for that wavelength."""
    opd = physical.opd if physical is not None else reference.parameters * reference.optics.wavelength
    params = (opd / optics.wavelength).astype(np.float32)
    sampling = optics.pixel_size * optics.na / optics.wavelength
    scaled = int(np.ceil(reference.psf_size * optics.wavelength / reference.optics.wavelength
                         * reference.optics.pixel_size / optics.pixel_size)) | 1
    limit = min(reference.image_shape)
    if np.isclose(optics.wavelength, reference.optics.wavelength) and \
            np.isclose(optics.pixel_size, reference.optics.pixel_size):
        size = reference.psf_size                  # the channel the map was estimated on: its PSF size
    else:
        size = max(scaled, psf_size_for(params, reference.names, sampling, limit))
        size = min(size, limit if limit % 2 else limit - 1)
    conf = reference.confidence if physical is None else physical.confidence.astype(np.float32)
    return dataclasses.replace(reference, parameters=params, raw=params.copy(), optics=optics, psf_size=int(size),
                               confidence=conf, informative=conf >= 0.5,
                               # σ of the reference estimate, in this channel's waves
                               std=(reference.std * (reference.optics.wavelength / optics.wavelength)
                                    ).astype(np.float32),
                               info={**reference.info, "wavelength_um": optics.wavelength})


def flicker(maps: Sequence[PSFMap], name: str = "defocus") -> float:
    """RMS change of a parameter (waves) from one map to the next, over all patches: how much a time-lapse's
    maps flicker (0 for one map). Maps on different grids are compared on the first's."""
    if len(maps) < 2:
        return 0.0
    ys, xs = maps[0].centres_y, maps[0].centres_x
    k = maps[0].names.index(name)
    values = [_interp(m.parameters[k:k + 1], m.centres_y, m.centres_x, ys, xs)[0] for m in maps]
    return float(np.sqrt(np.mean([np.mean((b - a) ** 2) for a, b in zip(values, values[1:])])))


# ------------------------------------------------------------------------------------------------ the run

class _Source:
    """Planes of a stack: ``read(index)`` -> one YX plane."""

    def __init__(self, axes: str, shape: tuple[int, ...], read: Callable[[tuple[int, ...]], np.ndarray]):
        self.axes, self.shape, self.read = axes, tuple(shape), read
        self.lead = axes[:-2]
        self.lead_shape = self.shape[:-2]

    def indices(self) -> list[tuple[int, ...]]:
        return list(np.ndindex(*self.lead_shape)) if self.lead_shape else [()]

    def at(self, index: tuple[int, ...], axis: str) -> int:
        return int(index[self.lead.index(axis)]) if axis in self.lead else 0

    def size(self, axis: str) -> int:
        return self.shape[self.axes.index(axis)] if axis in self.lead else 1


def _maps(src: _Source, optics: list[Optics], net, settings: RunSettings, channels: str, frames: str,
          frame_sigma: float, psf_map: PSFMap | None, progress: Progress | None, client=None) -> tuple[dict, dict]:
    """Pass 1: the map of every plane (estimated, combined over channels, smoothed over time). With a Dask
    ``client`` the planes' maps are estimated as tasks on its workers (`_estimate_plane`); combining and
    smoothing the small maps stays here."""
    indices = src.indices()
    record: dict[str, Any] = {"channels": channels, "frames": frames}
    if frames == "smooth":
        record["frame_sigma"] = float(frame_sigma)
    if psf_map is not None:
        if tuple(psf_map.image_shape) != tuple(src.shape[-2:]):
            raise ValueError(f"psf_map: the map was estimated on {psf_map.image_shape[0]}x{psf_map.image_shape[1]}"
                             f"-pixel images; these are {src.shape[-2]}x{src.shape[-1]}")
        record.update(channels="from the PSF map", frames="from the PSF map")
        return {i: channel_map(psf_map, None, optics[src.at(i, "C")]) for i in indices}, record
    n_c, n_t = src.size("C"), src.size("T")
    estimated = list(range(n_c))                     # channels whose planes get a map of their own
    if n_c > 1 and channels == "best":
        photons = [_photons(src.read(next(i for i in indices if src.at(i, "C") == c))) for c in range(n_c)]
        best = int(np.argmax(photons))
        record.update(best_channel=best, channel_photons=[round(p, 1) for p in photons])
        estimated = [best]                           # the other channels' maps are not needed: not estimated
    todo = [i for i in indices if src.at(i, "C") in estimated]
    own: dict[tuple[int, ...], PSFMap] = {}
    if client is not None:
        from fiji_bridge.parallel.dask_engine import map_ordered
        tasks = ((np.asarray(src.read(i)), str(net.path), settings.stride, optics[src.at(i, "C")], settings.device)
                 for i in todo)                        # read lazily: a bounded number of planes in flight
        for k, (i, m) in enumerate(zip(todo, map_ordered(_estimate_plane, tasks, client))):
            own[i] = m
            if progress:
                progress(0.1 * (k + 1) / len(todo), f"PSF map {k + 1}/{len(todo)}")
    for k, i in enumerate(i for i in todo if i not in own):
        sub = (lambda f, m, k=k: progress(0.1 * (k + f) / len(todo), f"PSF map {k + 1}/{len(todo)}")) \
            if progress else None
        own[i] = estimate_psf_map(src.read(i), model=net, stride=settings.stride, optics=optics[src.at(i, "C")],
                                  device=settings.device, progress=sub)

    def with_channel(i, c):
        return tuple(c if a == "C" else v for a, v in zip(src.lead, i))
    if channels == "independent" or n_c == 1:
        ref_of = {i: own[i] for i in indices}        # each channel on its own grid
    else:                                            # every channel on the grid of the first estimated one
        ref_of = {i: own[with_channel(i, estimated[0])] for i in indices}
    phys = {i: _physical(own[i], ref_of[i].centres_y, ref_of[i].centres_x) for i in todo}
    # C: one physical map per (t, z) from the channels
    if n_c > 1 and channels != "independent":
        combined = {i: phys[i] if channels == "best" else
                    _combine([phys[with_channel(i, c)] for c in estimated]) for i in todo
                    if src.at(i, "C") == estimated[0]}
        phys = {i: combined[with_channel(i, estimated[0])] for i in indices}
    # T: smooth (or merge) the physical maps of each (z, c) over frames
    before = _flicker_of(src, todo, own) if n_t > 1 else 0.0
    if n_t > 1 and frames != "independent":
        lines: dict[tuple, list] = {}
        for i in indices:
            lines.setdefault(tuple(v for a, v in zip(src.lead, i) if a != "T"), []).append(i)
        smoothed = {}
        for members in lines.values():
            members = sorted(members, key=lambda i: src.at(i, "T"))
            if frames == "single":
                merged = _combine([phys[i] for i in members])
                smoothed.update({i: merged for i in members})
            else:
                t = np.arange(len(members))
                for a, i in enumerate(members):
                    g = np.exp(-0.5 * ((t - a) / frame_sigma) ** 2)
                    near = g > 1e-3
                    smoothed[i] = _combine([phys[members[b]] for b in t[near]], list(g[near]))
        phys.update(smoothed)
    maps = {i: channel_map(ref_of[i], phys[i], optics[src.at(i, "C")]) for i in indices}
    if n_t > 1:
        record["flicker_waves"] = {"per_frame_maps": before, "used": _flicker_of(src, indices, maps)}
    return maps, record


def _photons(plane: np.ndarray) -> float:
    """Photon level of a plane (`fiji_bridge.estimation.noise`), from a central crop as for auto settings."""
    from fiji_bridge.estimation.noise import auto_settings
    from fiji_bridge.restoration.sv_convolution import check_image
    h, w = plane.shape
    y0, x0 = max((h - 1024) // 2, 0), max((w - 1024) // 2, 0)
    try:
        return float(auto_settings(check_image(np.asarray(plane[y0:y0 + 1024, x0:x0 + 1024]), "image"))["photons"])
    except ValueError:                  # e.g. an empty channel: never the best one
        return 0.0


def _flicker_of(src: _Source, indices, maps: dict) -> float:
    lines: dict[tuple, list] = {}
    for i in indices:
        lines.setdefault(tuple(v for a, v in zip(src.lead, i) if a != "T"), []).append(i)
    values = [flicker([maps[i] for i in sorted(m, key=lambda i: src.at(i, "T"))]) for m in lines.values()]
    return float(np.mean(values)) if values else 0.0


def _restore(src: _Source, maps: dict, optics: list[Optics], net, settings: RunSettings,
             progress: Progress | None, client=None):
    """Pass 2: a generator of restored float32 planes in index order (one plane in memory at a time);
    ``used`` (filled before the first plane) holds the iterations/TV of each channel. With a Dask ``client``
    the planes are restored as tasks on its workers, at most two per worker in flight (memory stays bounded),
    and yielded in order."""
    from fiji_bridge.pipeline import resolve_settings, run
    indices = src.indices()
    used: dict[int, dict] = {}
    for c in range(src.size("C")):
        first = next(i for i in indices if src.at(i, "C") == c)
        used[c] = resolve_settings(src.read(first), settings.iterations, settings.tv)

    def fixed(i):
        c = src.at(i, "C")
        return dataclasses.replace(settings, iterations=used[c]["iterations"], tv=used[c]["tv"],
                                   model=None if client is not None else settings.model)

    def planes():
        for k, i in enumerate(indices):
            sub = (lambda f, m, k=k: progress(0.1 + 0.9 * (k + f) / len(indices),
                                              f"plane {k + 1}/{len(indices)}: {m}")) if progress else None
            result = run(np.asarray(src.read(i)), fixed(i), optics=optics[src.at(i, "C")], model=net,
                         psf_map=maps[i], progress=sub)
            yield np.asarray(result.image, np.float32)

    def distributed():
        from fiji_bridge.parallel.dask_engine import map_ordered
        tasks = ((np.asarray(src.read(i)), fixed(i), optics[src.at(i, "C")], maps[i]) for i in indices)
        for done, plane in enumerate(map_ordered(_restore_plane, tasks, client), start=1):
            if progress:
                progress(0.1 + 0.9 * done / len(indices), f"plane {done}/{len(indices)}")
            yield plane
    return used, (planes() if client is None else distributed())


def _estimate_plane(plane: np.ndarray, model: str, stride: int | None, optics: Optics, device: str) -> PSFMap:
    """One plane's map (a Dask task): the model is loaded once per worker (`cached_model`)."""
    from fiji_bridge.parallel.dask_engine import cached_model
    return estimate_psf_map(plane, model=cached_model(model, device=device), stride=stride, optics=optics,
                            device=device)


def _restore_plane(plane: np.ndarray, settings: RunSettings, optics: Optics, psf_map: PSFMap) -> np.ndarray:
    """One plane restored with its map (a Dask task: no model needed, the map is given)."""
    from fiji_bridge.pipeline import run
    return np.asarray(run(plane, settings, optics=optics, psf_map=psf_map).image, np.float32)


def _model(model, device: str):
    from fiji_bridge.estimation.model import PSFModel
    return model if isinstance(model, PSFModel) else PSFModel(model, device=device)


def _array_source(image, axes: str, settings: RunSettings, optics: Optics | None,
                  wavelengths: Sequence[float] | None, channels: str, frames: str, frame_sigma: float,
                  psf_map: PSFMap | None) -> tuple[_Source, Any, list[Optics]]:
    """The checked planes, model and per-channel optics of an in-memory stack (`deconvolve_stack`,
    `estimate_stack_maps`)."""
    check_modes(channels, frames, frame_sigma)
    if optics is not None and not isinstance(optics, Optics):
        raise ValueError(f"optics must be an Optics, got {optics!r}")
    if psf_map is not None and not isinstance(psf_map, PSFMap):
        raise ValueError(f"psf_map must be a PSFMap (fiji_bridge.estimate_psf_map / load_psf_map), got "
                         f"{type(psf_map).__name__}")
    if not hasattr(image, "shape"):
        image = np.asarray(image)
    shape = tuple(int(n) for n in image.shape)
    axes = _check_axes(axes, shape)
    net = _model(settings.model, settings.device)
    base = optics or (psf_map.optics if psf_map is not None else net.config.default_image_optics)
    n_c = shape[axes.index("C")] if "C" in axes[:-2] else 1
    if wavelengths is not None:
        waves = [float(w) for w in wavelengths]
        if len(waves) != n_c:
            raise ValueError(f"wavelengths: {len(waves)} given for {n_c} channels")
    else:
        waves = [base.wavelength] * n_c
    per_channel = [Optics(na=base.na, wavelength=w, pixel_size=base.pixel_size, n=base.n) for w in waves]
    settings.check_shape(shape[-2:])
    return _Source(axes, shape, lambda i: np.asarray(image[i]) if i else np.asarray(image)), net, per_channel


def estimate_stack_maps(image, axes: str, *, model=None, stride: int | None = None, device: str = "cpu",
                        optics: Optics | None = None, wavelengths: Sequence[float] | None = None,
                        channels: str = "best", frames: str = "smooth", frame_sigma: float = 1.0,
                        progress: Progress | None = None) -> tuple[dict[tuple[int, ...], PSFMap], dict]:
    """The PSF map of every plane of an in-memory stack, as `deconvolve_stack` would use them, without
    restoring anything (a preview; `map_stack_file` for files). Keywords as in `deconvolve_stack`; returns the
    maps keyed by plane index over the leading axes and what was chosen (`StackDeconvolution.settings`)."""
    settings = RunSettings(stride=stride, device=device, model=model)
    src, net, per_channel = _array_source(image, axes, settings, optics, wavelengths, channels, frames, frame_sigma,
                                          None)
    # _maps spends the first tenth of a run's progress on the maps: here they are the whole run
    sub = (lambda f, m: progress(min(f / 0.1, 1.0), m)) if progress else None
    return _maps(src, per_channel, net, settings, channels, frames, frame_sigma, None, sub)


def deconvolve_stack(image, axes: str, *, iterations: int | str = AUTO, tv: float | str = AUTO, model=None,
                     stride: int | None = None, grid: tuple[int, int] | None = None, tile: int | None = None,
                     device: str = "cpu", optics: Optics | None = None,
                     wavelengths: Sequence[float] | None = None, channels: str = "best", frames: str = "smooth",
                     frame_sigma: float = 1.0, psf_map: PSFMap | None = None,
                     progress: Progress | None = None, client=None) -> StackDeconvolution:
    """Restore a stack with T, Z and/or C axes around YX, plane by plane (see the module's doc for what the
    axes mean).

    Parameters
    ----------
    image : ndarray (or anything with ``.shape`` and integer indexing of its leading axes)
        The stack, e.g. shape (T, C, Y, X).
    axes : str
        Its axes, e.g. ``"TCYX"`` (T, Z, C in any order, then YX).
    optics : Optics, optional
        NA, n and pixel size (and the wavelength of single-channel stacks); default: the model's.
    wavelengths : sequence of float, optional
        Emission wavelength (µm) of each channel; default: ``optics.wavelength`` for every channel.
    channels : {'best', 'joint', 'independent'}
    frames : {'smooth', 'single', 'independent'}
    frame_sigma : float
        Temporal smoothing of ``frames='smooth'``, in frames.
    psf_map : PSFMap, optional
        One saved map for every plane (rendered at each channel's wavelength); skips estimation.
    client : distributed.Client, optional
        Estimate and restore the planes as Dask tasks on this cluster, a bounded number in flight, results
        taken in order (the maps are combined here: they are small).

    The other keywords are those of `fiji_bridge.deconvolve`. Returns a `StackDeconvolution` whose
    ``image`` is float32 with the input's shape and axes.
    """
    settings = RunSettings(iterations=iterations, tv=tv, stride=stride, grid=grid, tile=tile, device=device,
                           model=model)
    src, net, per_channel = _array_source(image, axes, settings, optics, wavelengths, channels, frames, frame_sigma,
                                          psf_map)
    shape, axes = src.shape, src.axes
    maps, record = _maps(src, per_channel, net, settings, channels, frames, frame_sigma, psf_map, progress, client)
    used, planes = _restore(src, maps, per_channel, net, settings, progress, client)
    out = np.empty(shape, np.float32)
    for i, plane in zip(src.indices(), planes):
        out[i] = plane
    record["iterations_tv"] = {str(c): u for c, u in used.items()}
    return StackDeconvolution(image=out, maps=maps, optics=per_channel, axes=axes, settings=record)


# ------------------------------------------------------------------------------------------------ files

def process_stack_file(in_path: str | Path, out_path: str | Path, *, map_path: str | Path | None = None,
                       report_path: str | Path | None = None, iterations: int | str = AUTO,
                       tv: float | str = AUTO, model=None, stride: int | None = None,
                       grid: tuple[int, int] | None = None, tile: int | None = None, device: str = "cpu",
                       na: float | None = None, wavelength: float | Sequence[float] | None = None,
                       pixel_size: float | None = None, n: float | None = None, objective: str | None = None,
                       channels: str = "best", frames: str = "smooth", frame_sigma: float = 1.0,
                       psf_map: str | Path | PSFMap | None = None, output_format: str | None = None,
                       progress: Progress | None = None, client=None, pyramid: int = 1) -> dict:
    """Deconvolve one TIFF / OME-TIFF / ImageJ hyperstack (or 2-D image) file plane by plane, streaming.

    The output has the input's axes, calibration, z step, time interval and channel names, as an OME-TIFF
    when the input is an OME-TIFF or OME-Zarr, an OME-Zarr when ``out_path`` ends in ``.zarr``, else an ImageJ
    hyperstack (``output_format`` 'ome', 'imagej' or 'zarr' forces one);
    what was used (optics per channel and where each value came from, map modes, iterations/TV, flicker)
    is in its metadata (`fiji_bridge.io.stacks.read_stack_info`). ``map_path`` gets the maps of all planes
    (`fiji_bridge.io.map_file.load_psf_map` reads them back), ``report_path`` the report of the first
    plane. ``psf_map`` (a path or a `PSFMap`) reuses a saved map for every plane. ``pyramid`` is the number
    of resolution levels of an OME-Zarr output (`fiji_bridge.io.omezarr.write_omezarr`). With a Dask
    ``client`` the planes are estimated and restored as tasks on its workers and written here in order.
    Every output is written atomically: a failure leaves none.
    """
    from fiji_bridge.io.atomic import atomic_path, check_outputs
    from fiji_bridge.io.stacks import write_stack
    from fiji_bridge.pipeline import _version
    settings = RunSettings(iterations=iterations, tv=tv, stride=stride, grid=grid, tile=tile, device=device,
                           model=model, na=na, wavelength=wavelength, pixel_size=pixel_size, n=n,
                           objective=objective, channels=channels, frames=frames)
    check_modes(channels, frames, frame_sigma)
    if output_format not in (None, "ome", "imagej", "zarr"):
        raise ValueError(f"output_format must be 'ome', 'imagej' or 'zarr', got {output_format!r}")
    from fiji_bridge.io.omezarr import is_omezarr
    in_path, out_path = Path(in_path), Path(out_path)
    to_zarr = output_format == "zarr" or (output_format is None and str(out_path).rstrip("/").lower().endswith(".zarr"))
    if to_zarr:                                       # a folder written whole and renamed (`write_omezarr`)
        if out_path.resolve() == in_path.resolve():
            raise ValueError(f"refusing to overwrite the input file {in_path}")
        if out_path.exists() and not is_omezarr(out_path):
            raise ValueError(f"output {out_path} exists and is not an OME-Zarr image; give a new name")
    outputs = check_outputs(in_path, output=None if to_zarr else out_path, map=map_path, report=report_path)
    if to_zarr:
        if not out_path.parent.is_dir():
            raise ValueError(f"output folder does not exist: {out_path.parent}")
        outputs = [out_path, *outputs]
    elif pyramid != 1:
        raise ValueError(f"pyramid: only OME-Zarr outputs (.zarr) hold a pyramid; {out_path.name} is a TIFF")
    stack, psf_map, net, optics, sources = _open(in_path, settings, psf_map)
    if to_zarr:
        from fiji_bridge.io.omezarr import check_levels
        check_levels(pyramid, stack.plane_shape)
    kind = "zarr" if to_zarr else output_format or ("ome" if stack.kind in ("ome", "zarr") else "imagej")
    src, out_axes = _source(stack, kind)
    maps, record = _maps(src, optics, net, settings, channels, frames, frame_sigma, psf_map, progress, client)
    names = stack.optics.channel_names or []
    info = {"source": in_path.name, "software": f"semiblind {_version()}", "axes": out_axes,
            "optics": optics[0].to_dict(), "wavelengths": [o.wavelength for o in optics],
            "optics_sources": sources, "objective": objective or stack.optics.objective,
            "channel_names": names, "maps": record, "model": str(net.path), "input_metadata": stack.metadata,
            "note": "each YX plane deconvolved in 2-D with its own PSF map (not 3-D deconvolution)"}
    if psf_map is not None:
        info["psf_map"] = str(psf_map.info.get("file", "given"))
    labels = None
    if kind == "imagej" and src.lead_shape:
        labels = []
        for i in src.indices():
            c = src.at(i, "C")
            parts = [f"{a.lower()}{src.at(i, a) + 1}" for a in src.lead]
            labels.append((names[c] + " " if c < len(names) and names[c] else "") + " ".join(parts))
    with contextlib.ExitStack() as stack_of_outputs:
        out_tmp, map_tmp, report_tmp = (None if p is None else stack_of_outputs.enter_context(atomic_path(p))
                                        for p in (None if to_zarr else out_path, map_path, report_path))
        used, planes = _restore(src, maps, optics, net, settings, progress, client)
        info["settings"] = {"iterations": used[0]["iterations"], "tv": used[0]["tv"],
                            "per_channel": {str(c): u for c, u in used.items()}}
        info["iterations"], info["tv"] = used[0]["iterations"], used[0]["tv"]
        if to_zarr:
            from fiji_bridge.io.omezarr import write_omezarr
            write_omezarr(out_path, planes, src.shape, out_axes, pixel_size=optics[0].pixel_size,
                          z_spacing=stack.optics.z_spacing, time_interval=stack.optics.time_interval,
                          channel_names=names, info=info, levels=pyramid)
        else:
            write_stack(out_tmp, planes, src.shape, out_axes, kind=kind, pixel_size=optics[0].pixel_size,
                        z_spacing=stack.optics.z_spacing, time_interval=stack.optics.time_interval,
                        channel_names=names, wavelengths=[o.wavelength for o in optics], labels=labels, info=info)
        try:
            if map_path is not None:
                write_map_stack(map_tmp, src, maps)
            if report_path is not None:
                from fiji_bridge.io.report import write_report
                first = src.indices()[0]
                restored = _read_first_plane(out_path if to_zarr else out_tmp, kind)
                psfs, _, _ = maps[first].render_psfs(settings.grid)
                write_report(report_tmp, np.asarray(src.read(first), np.float32), restored, maps[first], psfs,
                             title=in_path.name)
        except BaseException:
            if to_zarr:                               # the other outputs fail: no output at all
                import shutil
                shutil.rmtree(out_path, ignore_errors=True)
            raise
    first = maps[src.indices()[0]]
    return {"outputs": [str(p) for p in outputs], "optics": optics[0].to_dict(),
            "wavelengths": [o.wavelength for o in optics], "optics_sources": sources,
            "calibrated": stack.pixel_size is not None or psf_map is not None, "axes": out_axes,
            "format": kind, "planes": len(src.indices()),
            "psf_grid": list(settings.grid or _default_grid(first)), "map_provider": first.provider,
            "rl_device": "gpu" if device == "gpu" else "cpu", "tiled": False, "maps": record,
            "settings": {**used[0], "per_channel": {str(c): u for c, u in used.items()}}}


def _open(in_path: Path, settings: RunSettings, psf_map):
    """(stack, map to reuse, model, optics per channel, their sources) of a stack file run."""
    from fiji_bridge.io.map_file import load_psf_map
    from fiji_bridge.io.stacks import open_stack
    stack = open_stack(in_path)
    settings.check_shape(stack.plane_shape)
    if isinstance(psf_map, (str, Path)):
        psf_map = load_psf_map(psf_map)
    elif psf_map is not None and not isinstance(psf_map, PSFMap):
        raise ValueError(f"psf_map must be a map file or a PSFMap, got {type(psf_map).__name__}")
    if settings.pixel_size is None and stack.calibration_error and psf_map is None:
        raise ValueError(f"{stack.calibration_error}; give --pixel-size explicitly")
    net = _model(settings.model, settings.device)
    optics, sources = stack_optics(stack.optics, net.config.default_image_optics, stack.size("C"), objective=settings.objective,
                                   na=settings.na, n=settings.n, wavelength=settings.wavelength,
                                   pixel_size=settings.pixel_size,
                                   map_optics=psf_map.optics if psf_map is not None else None)
    return stack, psf_map, net, optics, sources


def _source(stack, kind: str) -> tuple[_Source, str]:
    """The planes of ``stack`` in the order of the output (ImageJ's TZC order for an ImageJ output)."""
    from fiji_bridge.io.stacks import imagej_axes
    out_axes, perm = (stack.axes, None) if kind in ("ome", "zarr") else imagej_axes(stack.axes)
    if perm is None or perm == sorted(perm):
        return _Source(stack.axes, stack.shape, stack.plane), stack.axes
    lead_perm = perm[:-2]

    def read_out(j):
        i = [0] * len(lead_perm)
        for k, p in enumerate(lead_perm):
            i[p] = j[k]
        return stack.plane(tuple(i))
    return _Source(out_axes, tuple(stack.shape[p] for p in perm), read_out), out_axes


def map_stack_file(in_path: str | Path, map_path: str | Path, *, stride: int | None = None, model=None,
                   device: str = "cpu", na: float | None = None, wavelength: float | Sequence[float] | None = None,
                   pixel_size: float | None = None, n: float | None = None, objective: str | None = None,
                   channels: str = "best", frames: str = "smooth", frame_sigma: float = 1.0) -> dict:
    """The PSF maps of every plane of a stack file (as `process_stack_file` would use them), written as one
    map file (`write_map_stack`) atomically; ``semiblind psf-map`` on a stack."""
    from fiji_bridge.io.atomic import check_outputs
    settings = RunSettings(stride=stride, model=model, device=device, na=na, wavelength=wavelength,
                           pixel_size=pixel_size, n=n, objective=objective, channels=channels, frames=frames)
    check_modes(channels, frames, frame_sigma)
    in_path = Path(in_path)
    check_outputs(in_path, map=map_path)
    stack, _, net, optics, sources = _open(in_path, settings, None)
    src, _ = _source(stack, "imagej")
    maps, record = _maps(src, optics, net, settings, channels, frames, frame_sigma, None, None)
    write_map_stack(map_path, src, maps)
    first = maps[src.indices()[0]]
    return {"planes": len(maps), "axes": src.axes, "grid": list(first.parameters.shape[1:]),
            "provider": first.provider, "optics_sources": sources, "maps": record}


def _default_grid(m: PSFMap) -> tuple[int, int]:
    from fiji_bridge.estimation.psf_map import default_grid
    return default_grid(m.image_shape)


def _read_first_plane(path: Path, kind: str) -> np.ndarray:
    import tifffile
    if kind == "zarr":
        from fiji_bridge.io.stacks import open_stack
        st = open_stack(path)
        return np.asarray(st.plane(next(st.indices())), np.float32)
    with tifffile.TiffFile(path) as tif:
        return np.asarray(tif.asarray(key=0, series=0), np.float32)


def map_stack(maps: dict[tuple[int, ...], PSFMap], lead: str) -> tuple[np.ndarray, list[str], dict, float]:
    """The map file's content for the maps of the planes of a stack (keys: plane indices over the ``lead``
    axes, in stack order): (slices, slice labels, Info metadata, map pixel size in µm). Slices are plane
    after plane; the Info adds ``planes``, ``axes`` and per-plane ``optics``. One plane's is the ordinary
    map file (`PSFMap.to_stack`). What `write_map_stack` writes and ImageJ's map windows show."""
    indices = list(maps)
    stacks = [maps[i].to_stack() for i in indices]
    first_stack, labels, meta = stacks[0]
    m0 = maps[indices[0]]
    pixel_size = m0.spacing * m0.optics.pixel_size
    if len(indices) == 1:
        return first_stack, labels, meta, pixel_size
    data = np.concatenate([s for s, _, _ in stacks])
    meta = {**meta, "labels": labels, "axes": lead + "YX", "planes": [list(map(int, i)) for i in indices],
            "plane_optics": [maps[i].optics.to_dict() for i in indices],
            "plane_psf_size_px": [int(maps[i].psf_size) for i in indices]}
    all_labels = [f"{' '.join(f'{a.lower()}{v + 1}' for a, v in zip(lead, i))} {label}"
                  for i in indices for label in labels]
    return data, all_labels, meta, pixel_size


def write_map_stack(path: str | Path, src: _Source, maps: dict) -> None:
    """The maps of all planes as one map file (`fiji_bridge.io.map_file`, content from `map_stack`), written
    atomically. A 2-D image's is the ordinary map file."""
    from fiji_bridge.io.tiff import write_imagej_tiff
    data, labels, meta, pixel_size = map_stack({i: maps[i] for i in src.indices()}, src.lead)
    write_imagej_tiff(path, data, pixel_size, labels=labels, info=meta)
