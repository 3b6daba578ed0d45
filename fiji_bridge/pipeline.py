"""The semi-blind pipeline: PSF map by the CNN, then spatially-variant TV Richardson–Lucy."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiji_bridge.io.atomic import atomic_path, check_outputs
from fiji_bridge.restoration.backend import release_heap, resolve_device, to_numpy
from fiji_bridge.estimation.model import PSFModel, config_path_for, default_model_path
from fiji_bridge.estimation.model_config import ModelConfig
from fiji_bridge.optics.parameters import Optics
from fiji_bridge.estimation.psf_map import PSFMap, estimate_psf_map
from fiji_bridge.restoration.richardson_lucy import richardson_lucy
from fiji_bridge.restoration.sv_convolution import check_image
from fiji_bridge.io.tiff import ImageFile, LazyImage, MappedTiff, read_image, write_imagej_tiff
from fiji_bridge.restoration.tiling import auto_tile, deconvolve_tiled
from fiji_bridge.settings import AUTO, RunSettings
from fiji_bridge.validation import Progress

if TYPE_CHECKING:
    from distributed import Client
    from numpy.typing import ArrayLike

__all__ = ["Deconvolution", "deconvolve", "process_file", "run", "resolve_settings", "default_optics",
           "image_optics", "file_optics", "write_psf_map", "check_outputs", "open_image"]

#: Measured throughputs on the 2-core reference machine (benchmarks/bench_rl.py, 2026-12-07, v2.1 with its
#: near-focus model, both int8; separable SV scheme): the map reads about 1900 64-px image patches/s (1650 at
#: 1024², 2200 at 2048², both networks counted in the time) and SV TV-RL does about 2.6e7 pixel-iterations/s
#: (2.7e7 / 2.5e7, default grid, its 31-px PSFs). Only their ratio is used: it splits the progress bar between
#: the map and the iterations.
_PATCHES_PER_S = 1900.0
_PIXEL_ITERATIONS_PER_S = 2.6e7


def map_share(shape: tuple[int, ...], iterations: int, stride_px: float = 64.0) -> float:
    """Expected fraction of a run's time spent on the PSF map (the progress bar's split), from the measured
    throughputs above: ``patches / (patches + iterations·pixels·ratio)``."""
    h, w = shape[-2:]
    patches = (h / stride_px + 1) * (w / stride_px + 1)
    t_map = patches / _PATCHES_PER_S
    t_rl = iterations * h * w / _PIXEL_ITERATIONS_PER_S
    return float(t_map / (t_map + t_rl))


@dataclass
class Deconvolution:
    """Restored image and the PSF map it was restored with."""

    image: np.ndarray
    psf_map: PSFMap
    psfs: np.ndarray              # (gy, gx, s, s) PSF grid used
    device: str                   # 'cpu' or 'gpu' (array module that ran RL)
    settings: dict | None = None  # iterations and tv used (and the photon estimate when chosen automatically)
    tile: int | None = None       # tile side when restored in tiles


#: Side of the central crop whose noise chooses automatic settings (enough pixels, bounded cost).
_NOISE_CROP = 1024


def resolve_settings(image: np.ndarray | LazyImage, iterations: int | str = AUTO, tv: float | str = AUTO) -> dict:
    """``{"iterations", "tv"}`` with ``"auto"`` values chosen from the image's noise (`fiji_bridge.estimation.noise`):
    the photon level of a central crop of at most 1024² pixels (lazy images are read only there)."""
    if iterations != AUTO and tv != AUTO:
        return {"iterations": iterations, "tv": tv}
    from fiji_bridge.estimation.noise import auto_settings
    h, w = image.shape
    y0, x0 = max((h - _NOISE_CROP) // 2, 0), max((w - _NOISE_CROP) // 2, 0)
    crop = check_image(np.asarray(image[y0:y0 + _NOISE_CROP, x0:x0 + _NOISE_CROP]), "image")
    auto = auto_settings(crop)
    return {"iterations": auto["iterations"] if iterations == AUTO else iterations,
            "tv": auto["tv"] if tv == AUTO else tv, "auto": sorted(
                k for k, v in (("iterations", iterations), ("tv", tv)) if v == AUTO),
            "estimated_photons": auto["photons"]}


def default_optics(pixel_size: float | None = None, model: str | Path | None = None) -> Optics:
    """The model's optics, with the image's pixel size (µm) when given."""
    path = Path(model) if model is not None else default_model_path()
    cfg = ModelConfig.load(config_path_for(path))          # the config alone: no ONNX session needed
    optics = cfg.default_image_optics
    return optics if pixel_size is None else optics.with_pixel_size(pixel_size)


def deconvolve(image: ArrayLike, iterations: int | str = AUTO, tv: float | str = AUTO,
               model: PSFModel | str | Path | None = None,
               stride: int | None = None, optics: Optics | None = None, device: str = "cpu",
               grid: tuple[int, int] | None = None, progress: Progress | None = None,
               psf_map: PSFMap | None = None, tile: int | None = None, client: Client | None = None) -> Deconvolution:
    """Restore a 2-D image with spatially-variant blur, without any PSF calibration.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Raw image (8/16/32-bit); intensities should be roughly proportional to photon counts.
    iterations : int or 'auto'
        Richardson–Lucy iterations; 'auto' (default) chooses 15–60 from the image's photon level
        (`fiji_bridge.estimation.noise`): fewer for noisy images, which more iterations would only make noisier.
    tv : float or 'auto'
        Total-variation weight in [0, 0.2] (0 = plain RL); 'auto' (default) chooses it from the photon level
        (21 iterations and TV 0.009 at 300 estimated photons, 42 and 0.0034 at 3000).
    model : PSFModel or path, optional
        ONNX model; default: the bundled model.
    stride : int, optional
        Sliding-window step of the PSF map, in model pixels (default: one patch, windows side by side).
    optics : Optics, optional
        Optics of the image (default: the model's, i.e. only the pixel size needs to match).
    device : {'cpu', 'gpu', 'auto'}
        Where RL and the CNN run; 'auto' uses a CUDA GPU when CuPy/ORT-CUDA can.
    grid : (gy, gx), optional
        PSF grid of the deconvolution (default: cells of about two patches).
    progress : callable, optional
        ``progress(fraction, message)`` for progress bars (tqdm, ImageJ's status bar).
    psf_map : PSFMap, optional
        A map estimated before (skips the CNN).
    tile : int, optional
        Deconvolve in overlapping tiles of at most ``tile`` x ``tile`` pixels, blended smoothly; the map
        is still estimated once for the whole image. Default: tiles of 1024 above 4096² pixels.
    client : distributed.Client, optional
        Run the tiles as Dask tasks on this cluster (see `fiji_bridge.parallel.dask_engine`).

    The settings are those of `fiji_bridge.settings.RunSettings` (same defaults, ranges and messages).

    Returns
    -------
    Deconvolution with ``.image`` (float32, shape (H, W)), ``.psf_map`` and ``.settings`` (what was used).
    """
    settings = RunSettings(iterations=iterations, tv=tv, stride=stride, grid=grid, tile=tile, device=device,
                           model=model)
    if optics is not None and not isinstance(optics, Optics):
        raise ValueError(f"optics must be an Optics, e.g. fiji_bridge.default_optics(pixel_size=0.1), got {optics!r}")
    if psf_map is not None and not isinstance(psf_map, PSFMap):
        raise ValueError(f"psf_map must be a PSFMap (fiji_bridge.estimate_psf_map), got {type(psf_map).__name__}")
    # integer images go on as they are: no float32 copy of the whole image is made here and kept alive through
    # the deconvolution, whose peak memory is issue 15's target
    source = check_image(np.asarray(image), integers_as_float32=False)
    return run(source, settings, optics=optics, progress=progress, psf_map=psf_map, client=client)


#: Where the restored image goes: ``open_output(psf_grid, tile)`` returns an array-like written band by band
#: (``out[rows] = band``), e.g. a memory-mapped TIFF; None: a new in-memory float32 array.
OpenOutput = Callable[[tuple[int, int], "int | None"], Any]


def run(image: np.ndarray | LazyImage, settings: RunSettings, *, optics: Optics | None = None, model: PSFModel | None = None,
        progress: Progress | None = None, psf_map: PSFMap | None = None, client: Client | None = None,
        open_output: OpenOutput | None = None) -> Deconvolution:
    """The one deconvolution path of every front-end: settings resolved from the image's noise, PSF map (unless
    given), PSF grid, then RL, whole or in tiles (`fiji_bridge.restoration.tiling.auto_tile`).

    ``image`` is the source: an array in memory, or a lazy image (`LazyImage`) read band by band when tiled.
    ``open_output`` chooses the sink of a tiled run (see `OpenOutput`); the result's ``image`` is then that
    sink (`process_file` writes a memory-mapped TIFF this way), else a float32 array.
    """
    settings.check_shape(tuple(image.shape))
    xp = resolve_device(settings.device)
    used = resolve_settings(image, settings.iterations, settings.tv)
    iterations, tv = used["iterations"], used["tv"]
    share = 0.0 if psf_map is not None else map_share(tuple(image.shape), iterations)
    if psf_map is None:
        psf_map = _estimate_map(image, model if model is not None else settings.model, settings.stride, optics,
                                settings.device, progress, share)
    psfs, cy, cx = psf_map.render_psfs(settings.grid)
    tile = auto_tile(tuple(image.shape), settings.tile)
    if tile is not None:
        out = None if open_output is None else open_output(tuple(psfs.shape[:2]), tile)
        restored = deconvolve_tiled(image, psfs, (cy, cx), tile=tile, iterations=iterations, tv=tv, client=client,
                                    device=settings.device, out=out, progress=_tile_progress(progress, share))
    else:
        def step(it: int, _estimate) -> None:
            if progress:
                progress(share + (1 - share) * it / iterations, f"Richardson-Lucy {it}/{iterations}")
        step.wants_estimate = False                    # type: ignore[attr-defined]  # progress only
        restored = to_numpy(richardson_lucy(xp.asarray(np.asarray(image)), xp.asarray(psfs), iterations=iterations,
                                            tv=tv, centres=(cy, cx), callback=step))
    return Deconvolution(image=restored, psf_map=psf_map, psfs=psfs, device="cpu" if xp is np else "gpu",
                         settings=used, tile=tile)


def image_optics(pixel_size_from_file: float | None, config_optics: Optics, *, na: float | None = None,
                 wavelength: float | None = None, pixel_size: float | None = None, n: float | None = None,
                 objective: str | None = None) -> Optics:
    """Optics of an image: explicit values > the objective preset (NA and n, `fiji_bridge.optics.objectives`)
    > the file's calibration (pixel size) > the model's optics.

    None means "not given"; an explicit value is used as it is, so an invalid one (0, negative, NaN) is a
    ValueError naming it, never replaced by a default (front-ends that offer 0 as "auto", such as the
    ImageJ dialog, turn it into None themselves).
    """
    def given(value, fallback):
        return fallback if value is None else value
    if objective is not None:
        from fiji_bridge.optics.objectives import objective as preset
        na, n = given(na, preset(objective)[0]), given(n, preset(objective)[1])
    return Optics(na=given(na, config_optics.na), wavelength=given(wavelength, config_optics.wavelength),
                  pixel_size=given(pixel_size, pixel_size_from_file or config_optics.pixel_size),
                  n=given(n, config_optics.n))


def file_optics(img: ImageFile, config_optics: Optics, *, na: float | None = None, wavelength: float | None = None,
                pixel_size: float | None = None, n: float | None = None, objective: str | None = None,
                hint: str = "--pixel-size") -> Optics:
    """`image_optics` of a file read by `fiji_bridge.io.tiff.read_image`: a calibration that cannot be used
    (non-square pixels, a unit that is not a length) is an error unless the pixel size is given (``hint``
    names the option that gives it), the same rule as the ImageJ command."""
    if pixel_size is None and img.calibration_error:
        raise ValueError(f"{img.calibration_error}; give {hint} explicitly")
    return image_optics(img.pixel_size, config_optics, na=na, wavelength=wavelength, pixel_size=pixel_size, n=n,
                        objective=objective)


def write_psf_map(path: str | Path, psf_map: PSFMap, guard: str | Path | None = None) -> None:
    """The map as an ImageJ stack (one labelled slice per parameter, confidence, depth), written atomically."""
    stack, labels, meta = psf_map.to_stack()
    write_imagej_tiff(path, stack, psf_map.spacing * psf_map.optics.pixel_size, labels=labels, info=meta,
                      overwrite_guard=guard)


def process_file(in_path: str | Path, out_path: str | Path, *, map_path: str | Path | None = None,
                 report_path: str | Path | None = None, iterations: int | str = AUTO, tv: float | str = AUTO,
                 model: PSFModel | str | Path | None = None, stride: int | None = None,
                 grid: tuple[int, int] | None = None, tile: int | None = None, device: str = "cpu",
                 na: float | None = None, wavelength: float | None = None, pixel_size: float | None = None,
                 n: float | None = None, objective: str | None = None, channels: str = "best",
                 frames: str = "smooth", psf_map: str | Path | None = None, progress: Progress | None = None,
                 client: Client | None = None, pyramid: int = 1) -> dict:
    """Deconvolve one TIFF file: the job of ``semiblind deconvolve`` and of each file of ``semiblind batch``.

    Stacks (T, Z, C around YX), OME-TIFF files, an objective preset, per-channel wavelengths or a saved map
    (``psf_map``) go through `fiji_bridge.stacks.process_stack_file` (plane by plane, optics from the
    metadata, the input's axes and format out), an OME-Zarr with several images (plate, series) through
    `fiji_bridge.positions.process_positions`; a plain 2-D TIFF as follows. ``pyramid`` is the number of
    resolution levels of an OME-Zarr output (``OUT.zarr``); TIFF outputs have one.

    Reads a 2-D image with its calibration, estimates the PSF map, deconvolves, and writes the restored
    32-bit ImageJ TIFF (calibration copied, parameters in its Info) and optionally the map stack and a
    report PNG. Every output is written atomically and the input is never overwritten. The settings are
    those of `fiji_bridge.settings.RunSettings`; the work is `run`, as for `deconvolve`, with the file as the
    source (loaded, or read band by band when tiled) and, when tiled, a memory-mapped TIFF as the sink.

    Returns
    -------
    dict
        What was done: outputs, optics used, whether the file was calibrated, PSF grid, devices.
    """
    settings = RunSettings(iterations=iterations, tv=tv, stride=stride, grid=grid, tile=tile, device=device,
                           model=model, na=na, wavelength=wavelength, pixel_size=pixel_size, n=n,
                           objective=objective, channels=channels, frames=frames, psf_map=psf_map)
    in_path = Path(in_path)
    from fiji_bridge.positions import is_multi_position, process_positions
    if is_multi_position(in_path):
        return process_positions(in_path, out_path, map_path=map_path, report_path=report_path, progress=progress,
                                 client=client, pyramid=pyramid, **settings.keywords())
    if _is_stack_run(in_path, settings) or str(out_path).rstrip("/").lower().endswith(".zarr") or pyramid != 1:
        from fiji_bridge.stacks import process_stack_file
        return process_stack_file(in_path, out_path, map_path=map_path, report_path=report_path, progress=progress,
                                  client=client, pyramid=pyramid, **settings.keywords())
    outputs = check_outputs(in_path, output=out_path, map=map_path, report=report_path)
    img, tile = open_image(in_path, settings.tile)
    settings.check_shape(img.data.shape)
    net = model if isinstance(model, PSFModel) else PSFModel(model, device=device)
    optics = file_optics(img, net.config.default_image_optics, **settings.optics())
    info = {"source": in_path.name, "software": f"semiblind {_version()}", "optics": optics.to_dict(),
            "model": str(net.path), "input_metadata": img.metadata}
    # every output goes to a temporary first and all are renamed together at the end: a failure or an
    # interruption anywhere leaves no output (and no temporary) at all
    with contextlib.ExitStack() as outputs_of_this_run:
        out_tmp, map_tmp, report_tmp = (None if p is None else outputs_of_this_run.enter_context(atomic_path(p))
                                        for p in (out_path, map_path, report_path))
        used: dict = {}

        def restored_info(psf_grid: tuple[int, int], tile: int | None) -> dict:
            return {"source": info["source"], "software": info["software"], "iterations": used["iterations"],
                    "tv": used["tv"], "settings": used, **{k: info[k] for k in ("optics", "model", "input_metadata")},
                    "psf_grid": list(psf_grid), **({"tile": tile} if tile is not None else {})}

        def open_output(psf_grid: tuple[int, int], tile: int | None) -> MappedTiff:
            # out of core: the restored image is written tile row by tile row into a memory-mapped TIFF, so
            # memory is bounded by the tile size whatever the image size
            return MappedTiff(out_tmp, img.data.shape, optics.pixel_size, info=restored_info(psf_grid, tile))

        used.update(resolve_settings(img.data, settings.iterations, settings.tv))
        fixed = dataclasses.replace(settings, iterations=used["iterations"], tv=used["tv"], tile=tile)
        result = run(img.data, fixed, optics=optics, model=net, progress=progress, client=client,
                     open_output=open_output)
        m, psfs = result.psf_map, result.psfs
        if result.tile is None:
            write_imagej_tiff(out_tmp, result.image, optics.pixel_size,
                              info=restored_info(psfs.shape[:2], None), overwrite_guard=in_path)
            preview = (np.asarray(img.data).astype(np.float32), result.image) if report_path is not None else None
        else:
            preview = (_decimated(img.data), _decimated(LazyImage(out_tmp))) if report_path is not None else None
        if map_path is not None:
            write_psf_map(map_tmp, m, in_path)
        if report_path is not None:
            from fiji_bridge.io.report import write_report
            write_report(report_tmp, *preview, m, psfs, title=in_path.name)
    return {"outputs": [str(p) for p in outputs], "optics": optics.to_dict(), "calibrated": img.pixel_size is not None,
            "psf_grid": list(psfs.shape[:2]), "map_provider": m.provider, "rl_device": result.device,
            "tiled": result.tile is not None, "settings": used}


def _is_stack_run(path: Path, settings: RunSettings) -> bool:
    """Whether a file goes through `fiji_bridge.stacks`: stacks, OME-TIFF, an objective preset, per-channel
    wavelengths or a saved map (a plain 2-D TIFF otherwise, whose reader gives its own errors)."""
    if settings.objective is not None or settings.psf_map is not None or isinstance(settings.wavelength, tuple):
        return True
    from fiji_bridge.io.stacks import open_stack
    try:
        stack = open_stack(path)
    except ValueError:
        return False
    return stack.kind in ("ome", "zarr") or bool(stack.lead_shape)


def open_image(path: str | Path, tile: int | None = None) -> tuple[ImageFile, int | None]:
    """The image of a TIFF file and the tile size to process it with (`fiji_bridge.restoration.tiling.auto_tile`):
    loaded when it is processed whole, a `LazyImage` read band by band when it is tiled."""
    img = read_image(path, lazy=True)
    tile = auto_tile(img.data.shape, tile)
    return (img if tile is not None else read_image(path)), tile


def _estimate_map(image, model: PSFModel | str | Path | None, stride: int | None, optics: Optics | None,
                  device: str, progress: Progress | None, share: float) -> PSFMap:
    sub = (lambda f, m: progress(share * f, m)) if progress else None
    psf_map = estimate_psf_map(image, model=model, stride=stride, optics=optics, device=device, progress=sub)
    release_heap()          # what the ONNX session freed, returned before the deconvolution's peak
    return psf_map


def _tile_progress(progress: Progress | None, share: float):
    def tiles_done(done: int, total: int) -> None:
        if progress:
            progress(share + (1 - share) * done / total, f"tile {done}/{total}")
    return tiles_done


def _decimated(image, max_side: int = 2048) -> np.ndarray:
    """A float32 preview of a (lazy) image with at most ``max_side`` pixels a side, read band by band."""
    step = max(1, -(-max(image.shape) // max_side))
    band = step * max(1, (1 << 22) // (step * image.shape[1]))
    return np.concatenate([np.asarray(image[r:r + band])[::step, ::step] for r in range(0, image.shape[0], band)]
                          ).astype(np.float32)


def _version() -> str:
    from fiji_bridge import __version__
    return __version__
