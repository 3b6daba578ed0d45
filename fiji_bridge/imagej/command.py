"""The Python side of the ImageJ / Fiji commands "Semi-Blind Deconvolution" and "Estimate PSF Map".

Three entry points share `run_command` (and `estimate_map` for the map preview):

* the ImageJ 1 menu commands / macros ``run("Semi-Blind Deconvolution", "iterations=30 ...")`` in a JVM
  hosted by Python: `install` starts the JVM, installs a JPype ``@JImplements`` handler into the Java shim
  (``plugins/java``) and registers both commands;
* the SciJava script commands ``plugins/scripts/Plugins/Deconvolution/*.py`` in Fiji's Python mode, which call
  `run_script` / `run_map_script`;
* Python code that has an ImagePlus (`run_command`, `estimate_map`).

Images and hyperstacks (any of C, Z, T around YX) go through `fiji_bridge.stacks.deconvolve_stack` and come
back with the input's dimensions, calibration, slice labels and channel colours; a selection restricts the
run to its bounding box (`fiji_bridge.imagej.hyperstack`). Progress goes to ImageJ's progress bar and status
line, and Esc cancels between two iterations (`Cancelled`; nothing is shown, ImageJ goes on). Bad parameters
raise a one-line ValueError naming the dialog field, which the Java shim turns into ``IJ.error`` and a macro
abort (the JVM stays usable).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import re
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fiji_bridge import imagej as ijconv
from fiji_bridge.imagej.hyperstack import Box, image_planes, selection_box
from fiji_bridge.io.ome import FileOptics, parse_imagej_info
from fiji_bridge.optics.objectives import OBJECTIVES
from fiji_bridge.optics.parameters import Optics
from fiji_bridge.settings import (CHANNEL_MODES, DEVICES, DIALOG, FRAME_MODES, NO_OBJECTIVE, OPTICS_FIELDS,
                                  RunSettings)
from fiji_bridge.settings import check_device as settings_check_device
from fiji_bridge.validation import Progress, one_line

#: Menu command name (ImageJ 1 command table, Fiji menu label).
COMMAND = "Semi-Blind Deconvolution"
#: The map preview's menu command name.
MAP_COMMAND = "Estimate PSF Map"
#: Parameter keys of the dialog, macro and Fiji script: the run settings the command offers
#: (`fiji_bridge.settings.DIALOG`), the stack and map options, then the command's own output option.
KEYS = (*DIALOG, "objective", "channels", "frames", "psf_map", "psf_montage")
#: Parameter keys of "Estimate PSF Map" (no restoration: no iterations, TV, saved map or montage).
MAP_KEYS = ("stride", "model", "device", *OPTICS_FIELDS, "objective", "channels", "frames")


@dataclass(frozen=True)
class CommandParameters:
    """Validated parameters of one run: the run settings (`RunSettings`, parsed from the dialog's strings by
    `RunSettings.parse`) and whether to show the PSF montage. Settings read as attributes
    (``params.iterations``)."""

    settings: RunSettings = field(default_factory=RunSettings)
    psf_montage: bool = False

    def __getattr__(self, name: str) -> Any:
        if name == "settings":
            raise AttributeError(name)
        return getattr(self.settings, name)

    @classmethod
    def parse(cls, values: Mapping[str, Any], keys: tuple[str, ...] = KEYS) -> "CommandParameters":
        """Validate strings or numbers (dialog fields, macro options, script parameters).

        Empty strings and None mean "default"; 0 means "auto" for ``iterations``/``stride`` and "from the image
        calibration / the model" for the optics; ``tv`` takes "auto" or a number; ``wavelength`` one number or
        one per channel ("0.46,0.52"); ``objective`` a preset or "none/custom" (see `RunSettings.parse`).
        ``keys`` are the command's (`KEYS`, `MAP_KEYS`). Raises a one-line ValueError naming the field.
        """
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(keys)})")
        settings = RunSettings.parse({k: v for k, v in values.items() if k != "psf_montage"})
        return cls(settings=settings, psf_montage=_boolean("psf_montage", values.get("psf_montage")))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _boolean(name: str, value: Any) -> bool:
    if _blank(value):
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


# --------------------------------------------------------------------------------------------- core


class Cancelled(Exception):
    """Esc was pressed during a run: it stopped between two iterations (or map bands), nothing was made."""


@dataclass
class CommandResult:
    """Result images of one run (ImagePlus objects, not shown) and the Python-side result
    (`fiji_bridge.stacks.StackDeconvolution`: restored planes, the map of each plane, optics per channel)."""

    restored: Any
    parameter_map: Any
    depth_map: Any
    montage: Any | None
    deconvolution: Any

    def images(self) -> list:
        """Images to show, restored image first."""
        return [im for im in (self.restored, self.parameter_map, self.depth_map, self.montage) if im is not None]


@dataclass
class _Input:
    """What a run works on: the planes (restricted to the selection), their axes, and the optics."""

    planes: np.ndarray
    axes: str
    box: Box | None
    calibrated: float | None            # µm, from the image calibration; None: uncalibrated or unusable
    optics: list[Optics]                # per channel
    sources: dict[str, str]             # where each optics value came from
    psf_map: Any | None                 # a saved PSFMap to reuse

    @property
    def offset(self) -> tuple[int, int]:
        return (0, 0) if self.box is None else (self.box.x, self.box.y)


@functools.lru_cache(maxsize=8)
def _model_optics(model: str | None) -> Optics:
    """The model's optics (cached: reading the model costs a few ms per run)."""
    from fiji_bridge.pipeline import default_optics
    return default_optics(None, model=model)


def _params_model_optics(params: CommandParameters) -> Optics:
    return _model_optics(str(params.model.resolve()) if params.model else None)


def image_file_optics(imp, calibrated: float | None) -> FileOptics:
    """What ``imp`` says about its optics: the pixel size of its calibration and the NA, n, emission
    wavelengths, objective and channel names of SemiBlind's JSON Info (a result of an earlier run)."""
    info = imp.getProperty("Info") if imp is not None else None
    file = parse_imagej_info(str(info) if info is not None else None)
    if calibrated is not None:
        file.pixel_size = calibrated
        file.sources["pixel_size"] = "image calibration"
    return file


def channel_optics(params: CommandParameters, file: FileOptics, n_channels: int,
                   psf_map: Any | None = None) -> tuple[list[Optics], dict[str, str]]:
    """Optics of each channel and where each value came from: the dialog's fields > the objective preset >
    a reused map > the image (calibration, Info) > the model (`fiji_bridge.stacks.stack_optics`, the rule of
    the command line)."""
    from fiji_bridge.stacks import stack_optics
    return stack_optics(file, _params_model_optics(params), n_channels, objective=params.objective, na=params.na,
                        n=params.n, wavelength=params.wavelength, pixel_size=params.pixel_size,
                        map_optics=None if psf_map is None else psf_map.optics)


def resolve_optics(params: CommandParameters, calibrated: float | None) -> Optics:
    """Optics of a single-channel run: explicit parameters > objective > calibration (pixel size) > the model."""
    return channel_optics(params, image_file_optics(None, calibrated), 1)[0][0]


def image_plane(imp) -> np.ndarray:
    """The single 2-D plane of ``imp`` as float32 (signed 16-bit values restored); ValueError for stacks."""
    planes, axes = image_planes(imp)
    if planes.ndim != 2:
        raise ValueError(f"image {imp.getTitle()} has {int(np.prod(planes.shape[:-2]))} planes ({axes}); "
                         "image_plane takes single 2-D images (run_command takes stacks)")
    return planes


def _calibrated(imp, params: CommandParameters) -> float | None:
    """Pixel size of the calibration in µm; an unusable one (non-square, not a length) is an error unless the
    pixel_size field (or a saved map) gives it."""
    try:
        return ijconv.pixel_size_um(imp)
    except ValueError as exc:
        if params.pixel_size is None and params.psf_map is None:
            raise ValueError(f"{exc}; give pixel_size explicitly") from None
        return None


def _prepare(imp, params: CommandParameters) -> _Input:
    """Check the image and the parameters and gather what a run needs (before any long work)."""
    from fiji_bridge.io.map_file import load_psf_map
    check_device(params.device)
    if imp is None:
        raise ValueError("image: no image is open")
    box = selection_box(imp, lambda line: _log(f"{COMMAND}: {line}"))
    planes, axes = image_planes(imp, box)
    calibrated = _calibrated(imp, params)
    psf_map = load_psf_map(params.psf_map) if params.psf_map is not None else None
    n_channels = int(planes.shape[axes.index("C")]) if "C" in axes else 1
    optics, sources = channel_optics(params, image_file_optics(imp, calibrated), n_channels, psf_map)
    return _Input(planes, axes, box, calibrated, optics, sources, psf_map)


def run_command(imp, values: Mapping[str, Any] | CommandParameters, progress: Progress | None = None,
                ) -> CommandResult:
    """Deconvolve the ImagePlus ``imp`` (an image or hyperstack) and build the result ImagePlus objects.

    Parameters
    ----------
    imp : ij.ImagePlus
        8/16/32-bit image or hyperstack (C, Z, T); its calibration gives the default pixel size, its
        selection (if any) the region to deconvolve.
    values : mapping or CommandParameters
        Parameters by key (see `KEYS`); strings as typed in a dialog or macro are accepted.
    progress : callable, optional
        ``progress(fraction, message)``; default: ImageJ's progress bar and status line. Esc cancels either way.

    Returns
    -------
    CommandResult
        ``restored`` (32-bit, the input's dimensions, calibration and labels, titled ``<input>_restored``),
        ``parameter_map`` (the map window, `fiji_bridge.imagej.results.map_stack_to_imageplus`), ``depth_map``
        (µm), ``montage`` (PSF grid of the first plane; only with ``psf_montage``). Titles are unique among the
        open images.

    Raises
    ------
    ValueError
        One line naming the dialog field.
    Cancelled
        When Esc was pressed.
    """
    from fiji_bridge.stacks import deconvolve_stack
    params = values if isinstance(values, CommandParameters) else CommandParameters.parse(values)
    with dialog_wording(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = _prepare(imp, params)
        report = cancellable(progress or imagej_progress())
        report(0.0, "estimating the PSF map" if job.psf_map is None else "rendering the saved PSF map")
        result = deconvolve_stack(job.planes, job.axes, iterations=params.iterations, tv=params.tv,
                                  model=params.model, stride=params.stride, device=params.device,
                                  optics=job.optics[0], wavelengths=[o.wavelength for o in job.optics],
                                  channels=params.channels, frames=params.frames, psf_map=job.psf_map,
                                  progress=report)
    for w in caught:
        _log(f"{COMMAND}: {w.message}")
    restored, pmap, depth, montage = _result_images(imp, params, job, result)
    report(1.0, "done")
    return CommandResult(restored, pmap, depth, montage, deconvolution=result)


def _result_images(imp, params: CommandParameters, job: _Input, result) -> tuple:
    """(restored, map window, depth, montage or None) of a run, with unique titles."""
    titles = unique_result_titles(str(imp.getTitle()), ("restored", "psfmap", "depth", "psfs"))
    origin = _origin(imp)
    restored = ijconv.restored_to_imageplus(result.image, imp, info=_run_info(imp, params, job, result),
                                            axes=job.axes, title=titles["restored"], offset=job.offset)
    pixel = job.optics[0].pixel_size
    if job.calibrated is None or not math.isclose(job.calibrated, pixel, rel_tol=1e-6):
        _recalibrate(restored, imp, pixel)                # the pixel size it was restored with
    lead = job.axes[:-2]
    pmap = ijconv.map_stack_to_imageplus(result.maps, lead, titles["psfmap"], offset=job.offset, origin=origin)
    depth = ijconv.depth_stack_to_imageplus(result.maps, lead, titles["depth"], offset=job.offset, origin=origin)
    montage = None
    if params.psf_montage:
        psfs, _, _ = next(iter(result.maps.values())).render_psfs(None)
        montage = ijconv.psf_montage_to_imageplus(psfs, pixel, titles["psfs"])
    return restored, pmap, depth, montage


def _origin(imp) -> tuple[float, float]:
    cal = imp.getCalibration()
    return float(cal.xOrigin), float(cal.yOrigin)


def _recalibrate(restored, source, pixel_size: float) -> None:
    """Give ``restored`` the pixel size (µm) it was restored with, keeping its origin and, converted to µm,
    the input's z step (the calibration had another value, another unit or none)."""
    from fiji_bridge.io.units import unit_to_um
    cal = restored.getCalibration()
    factor = unit_to_um(str(source.getCalibration().getUnit()))
    depth = float(cal.pixelDepth) * factor if factor is not None else None
    ijconv.set_pixel_size(restored, pixel_size, origin=(float(cal.xOrigin), float(cal.yOrigin)))
    if depth is not None and restored.getNSlices() > 1:
        cal = restored.getCalibration()
        cal.pixelDepth = depth
        restored.setCalibration(cal)


def _channel_names(imp) -> list[str]:
    """Each channel's name: its slice label in the first slice and frame (ImageJ 1 has no other place)."""
    if imp.getNChannels() < 2:
        return []
    stack = imp.getStack()
    labels = [stack.getSliceLabel(imp.getStackIndex(c + 1, 1, 1)) for c in range(int(imp.getNChannels()))]
    return [str(v).split("\n")[0] if v is not None else "" for v in labels]


def _run_info(imp, params: CommandParameters, job: _Input, result) -> dict:
    """The restored image's Info: what was used (the keys of the command line's outputs where they exist, so
    `fiji_bridge.io.ome.parse_imagej_info` reads the optics back)."""
    from fiji_bridge.estimation.psf_map import default_grid
    first = next(iter(result.maps.values()))
    return {"source": str(imp.getTitle()), "software": "semiblind", "parameters": _jsonable(params),
            "axes": job.axes, "optics": job.optics[0].to_dict(), "wavelengths": [o.wavelength for o in job.optics],
            "optics_sources": job.sources, "objective": params.objective, "channel_names": _channel_names(imp),
            "maps": result.settings, "psf_grid": list(default_grid(tuple(first.image_shape))),
            "calibrated_pixel_size_um": job.calibrated,
            "selection": None if job.box is None else job.box.to_dict(),
            "note": "each YX plane deconvolved in 2-D with its own PSF map (not 3-D deconvolution)"}


def estimate_map(imp, values: Mapping[str, Any] | CommandParameters, progress: Progress | None = None):
    """The "Estimate PSF Map" command: the map window of ``imp`` (every plane of a hyperstack, with the
    channel and frame modes of the deconvolution), no restoration; a quick preview before the long run.

    ``values`` are keyed by `MAP_KEYS`. Returns the map ImagePlus (`map_stack_to_imageplus`, not shown),
    titled ``<input>_psfmap``; File > Save As Tiff gives a map the psf_map field can reuse. Raises as
    `run_command`.
    """
    from fiji_bridge.stacks import estimate_stack_maps
    params = values if isinstance(values, CommandParameters) else CommandParameters.parse(values, MAP_KEYS)
    with dialog_wording(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = _prepare(imp, params)
        report = cancellable(progress or imagej_progress(MAP_COMMAND))
        report(0.0, "estimating the PSF map")
        maps, _ = estimate_stack_maps(job.planes, job.axes, model=params.model, stride=params.stride,
                                      device=params.device, optics=job.optics[0],
                                      wavelengths=[o.wavelength for o in job.optics], channels=params.channels,
                                      frames=params.frames, progress=report)
    for w in caught:
        _log(f"{MAP_COMMAND}: {w.message}")
    title = unique_result_titles(str(imp.getTitle()), ("psfmap",))["psfmap"]
    pmap = ijconv.map_stack_to_imageplus(maps, job.axes[:-2], title, offset=job.offset, origin=_origin(imp))
    report(1.0, "done")
    return pmap


def unique_result_titles(input_title: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    """Titles ``<input>_<suffix>`` of one run's results, with the same ``-1``, ``-2``... appended to all of
    them when any is already taken by an open image (a second run never gives duplicate titles)."""
    taken = {str(t) for t in ijconv.jclass("ij.WindowManager").getImageTitles()}
    for k in itertools.count():
        tag = f"-{k}" if k else ""
        titles = {s: f"{ijconv.result_title(input_title, s)}{tag}" for s in suffixes}
        if taken.isdisjoint(titles.values()):
            return titles
    raise AssertionError("unreachable")


def check_device(device: str) -> None:
    """``device=gpu`` needs CuPy with a CUDA GPU (deconvolution) and ONNX Runtime's CUDA provider (the map):
    a one-line ValueError naming the parameter when either is missing, before any work."""
    if settings_check_device(device) != "gpu":
        return
    import onnxruntime as ort

    from fiji_bridge.restoration.backend import cupy_module
    missing = [what for what, ok in (("CuPy with a CUDA GPU", cupy_module() is not None),
                                     ("ONNX Runtime's CUDA execution provider",
                                      "CUDAExecutionProvider" in ort.get_available_providers())) if not ok]
    if missing:
        raise ValueError(f"device: 'gpu' needs {' and '.join(missing)}, which this installation does not have "
                         "(install semiblind[gpu] on a machine with an NVIDIA GPU); choose device=cpu or auto")


#: The optics fields of the dialog and macro, as ImageJ users know them (not the CLI's --flags).
OPTICS_FIELDS_HINT = ("check the pixel_size, na, wavelength and n fields (0 = from the image calibration "
                      "and the model's optics)")
_FLAG = re.compile(r"--([a-z][a-z-]*)")


def field_wording(text: str) -> str:
    """An error message in the dialog's words: optics errors end with `OPTICS_FIELDS_HINT`, and a command-line
    flag (``--pixel-size``) becomes its field (``the pixel_size field``)."""
    if text.startswith("optics:"):
        text = re.sub(r"\.? ?Check --[a-z/-]+$", "", text).rstrip(". ")
        return f"{text}; {OPTICS_FIELDS_HINT}"
    return _FLAG.sub(lambda m: f"the {m.group(1).replace('-', '_')} field", text)


@contextlib.contextmanager
def dialog_wording():
    """ValueErrors raised inside name the dialog / macro fields, never the command line's flags."""
    try:
        yield
    except ValueError as exc:
        worded = field_wording(str(exc))
        if worded == str(exc):
            raise
        raise ValueError(worded) from None


def _jsonable(params: CommandParameters) -> dict:
    d = {**params.settings.to_dict(), "psf_montage": params.psf_montage}
    if d.get("psf_map") is not None:
        d["psf_map"] = str(d["psf_map"])
    return {k: d[k] for k in KEYS}


def default_parameters(imp) -> dict[str, str]:
    """Dialog defaults for ``imp``: the optics a run would use with empty fields (the image's calibration and
    SemiBlind Info, else the bundled model's), the CLI's channel and frame modes."""
    pixel = None
    if imp is not None:
        try:
            pixel = ijconv.pixel_size_um(imp)
        except ValueError:
            pixel = None
    n_channels = int(imp.getNChannels()) if imp is not None else 1
    file = image_file_optics(imp, pixel)
    try:
        optics, _ = channel_optics(CommandParameters(), file, n_channels)
    except ValueError:                     # e.g. an Info with unusable optics: the model's
        optics = [_model_optics(None)] * n_channels
    waves = sorted({o.wavelength for o in optics})
    objective = file.objective if file.objective in OBJECTIVES else NO_OBJECTIVE
    return {**RunSettings.dialog_defaults(), "na": repr(optics[0].na),
            "wavelength": ",".join(repr(o.wavelength) for o in optics) if len(waves) > 1 else repr(waves[0]),
            "pixel_size": repr(optics[0].pixel_size), "n": repr(optics[0].n), "objective": objective,
            "channels": RunSettings().channels, "frames": RunSettings().frames, "psf_map": "",
            "psf_montage": "false"}


#: Dialog fields a saved map also carries (its metadata records the optics it was estimated with).
MAP_OPTICS_FIELDS = ("na", "wavelength", "pixel_size", "n")


def map_over_prefilled_optics(imp, values: Mapping[str, str]) -> dict[str, str]:
    """With a saved map in the psf_map field, optics fields that still hold the dialog's prefilled value (the
    optics a run would use without a map, `default_parameters`) give way to the map's optics: only what the
    user changed overrides the map. Without it, the model's prefilled NA 0.75 would silently re-render an oil
    objective's map at NA 0.75. Recorded macros carry the same values, so they replay the same way."""
    values = dict(values)
    if _blank(values.get("psf_map")):
        return values
    prefilled = default_parameters(imp)
    for key in MAP_OPTICS_FIELDS:
        if key in values and str(values[key]).strip() == prefilled[key]:
            values[key] = ""
    return values


def dialog_choices() -> dict[str, list[str]]:
    """The dropdowns of the dialogs: objective presets (first: none/custom), channel and frame modes, devices."""
    return {"objective": [NO_OBJECTIVE, *OBJECTIVES], "channels": list(CHANNEL_MODES),
            "frames": list(FRAME_MODES), "device": list(DEVICES)}


# ------------------------------------------------------------------------------------- ImageJ glue


def imagej_progress(prefix: str = COMMAND) -> Progress:
    """A progress callback that drives ``IJ.showProgress`` and ``IJ.showStatus``."""
    IJ = ijconv.jclass("ij.IJ")

    def report(fraction: float, message: str) -> None:
        f = min(max(float(fraction), 0.0), 1.0)
        IJ.showProgress(f if f < 1.0 else 1.0)
        IJ.showStatus(f"{prefix}: {message}")
    return report


def cancellable(progress: Progress) -> Progress:
    """``progress`` that first checks ImageJ's Esc flag (``IJ.escapePressed``) and raises `Cancelled` when it is
    set. The deconvolution calls its progress after every Richardson-Lucy iteration and map band, so a run
    stops within one of them; it has made nothing yet (result images are built at the end)."""
    IJ = ijconv.jclass("ij.IJ")

    def report(fraction: float, message: str) -> None:
        if IJ.escapePressed():
            raise Cancelled("cancelled")
        progress(fraction, message)
    return report


def _log(message: str) -> None:
    ijconv.jclass("ij.IJ").log(str(message))


@contextlib.contextmanager
def _as_java_error(java_exception):
    """Every Python failure reaches ImageJ as a Java exception with a one-line message (tracebacks of
    unexpected errors go to ImageJ's log), never as a crash; Esc as Java's ``CancellationException``, which
    the shim reports as "cancelled" without an error dialog."""
    try:
        yield
    except Cancelled:
        raise ijconv.jclass("java.util.concurrent.CancellationException")("cancelled") from None
    except Exception as exc:
        if not isinstance(exc, ValueError):
            _log("".join(traceback.format_exception(exc)))
        raise java_exception(one_line(exc, bare_value_errors=True)) from None


_HANDLER: dict[str, Any] = {}


def _java_map(values: Mapping[str, Any]):
    """A ``java.util.HashMap`` of ``values`` (lists become ``String[]``)."""
    import jpype
    out = jpype.JClass("java.util.HashMap")()
    for key, value in values.items():
        out.put(key, jpype.JArray(jpype.JString)(value) if isinstance(value, list) else value)
    return out


def _handler():
    """The JPype proxy implementing ``semiblind.CommandHandler`` (created once the JVM runs)."""
    if "instance" in _HANDLER:
        return _HANDLER["instance"]
    import jpype
    from jpype import JImplements, JOverride

    ImagePlus = jpype.JClass("ij.ImagePlus")
    IllegalArgument = jpype.JClass("java.lang.IllegalArgumentException")

    def strings(params) -> dict[str, str]:
        return {str(k): str(v) for k, v in dict(params).items()}

    @JImplements("semiblind.CommandHandler")
    class CommandHandler:
        """Java-facing handler: strings in, ImagePlus[] out, Java exceptions with one-line messages."""

        @JOverride
        def defaults(self, imp):
            with _as_java_error(IllegalArgument):
                return _java_map(default_parameters(imp))

        @JOverride
        def choices(self):
            with _as_java_error(IllegalArgument):
                return _java_map(dialog_choices())

        @JOverride
        def objective(self, name):
            if str(name) not in OBJECTIVES:
                return None
            return jpype.JArray(jpype.JDouble)(list(OBJECTIVES[str(name)]))

        @JOverride
        def run(self, imp, params):
            with _as_java_error(IllegalArgument):
                result = run_command(imp, map_over_prefilled_optics(imp, strings(params)))
                return jpype.JArray(ImagePlus)(result.images())

        @JOverride
        def estimateMap(self, imp, params):
            with _as_java_error(IllegalArgument):
                return jpype.JArray(ImagePlus)([estimate_map(imp, strings(params))])

    _HANDLER["instance"] = CommandHandler()
    return _HANDLER["instance"]


def install(*, headless: bool | None = None) -> bool:
    """Start the JVM if needed, install the Python handler and register both commands (idempotent).

    Parameters
    ----------
    headless : bool, optional
        Passed to `fiji_bridge.imagej.start_jvm` when this call starts the JVM (default True).

    Returns
    -------
    bool
        True when the commands were also added to an ImageJ window's Plugins › Deconvolution menu.
    """
    if not ijconv.jvm_started():
        ijconv.start_jvm(headless=True if headless is None else headless)
    bridge = ijconv.jclass("semiblind.SemiBlindBridge")
    bridge.setHandler(_handler())
    in_menu = bool(bridge.register(COMMAND))
    bridge.register(MAP_COMMAND, "semiblind.Estimate_PSF_Map")
    return in_menu


def last_error() -> str:
    """One-line message of the last failed run of a command ("" after a successful run, "cancelled" after Esc)."""
    return str(ijconv.jclass("semiblind.SemiBlindBridge").lastError())


def macro_options(**values: Any) -> str:
    """Macro option string for ``run("Semi-Blind Deconvolution", options)`` from keyword values."""
    parts = []
    for key, value in values.items():
        if key not in KEYS:
            raise ValueError(f"unknown parameter {key!r} (known: {', '.join(KEYS)})")
        if key == "psf_montage":
            if value:
                parts.append("psf_montage")
            continue
        text = "" if value is None else str(value)
        parts.append(f"{key}=[{text}]" if (" " in text or not text) else f"{key}={text}")
    return " ".join(parts)


def _path_text(value: Any) -> str:
    """A path parameter of a Fiji script (``java.io.File``, str or None) as text ("" for none)."""
    return "" if value is None else str(value.getPath() if hasattr(value, "getPath") else value)


def run_script(imp, iterations: int = 0, tv: float | str = "auto", stride: int = 0, model: Any = None,
               device: str = "cpu", na: float = 0.0, wavelength: float | str = "0", pixel_size: float = 0.0,
               n: float = 0.0, objective: str = NO_OBJECTIVE, channels: str = "best", frames: str = "smooth",
               psf_map: Any = None, psf_montage: bool = False) -> tuple:
    """Entry point of the Fiji script command: returns (restored, parameter map, depth map, montage or None),
    all None when Esc cancelled the run.

    ``iterations`` 0 and ``tv`` "auto" (the defaults) let the image's noise choose them; zero optics values mean
    "from the image calibration / the model"; ``wavelength`` takes one value per channel ("0.46,0.52").
    ``model`` and ``psf_map`` may be ``java.io.File`` objects.
    """
    try:
        result = run_command(imp, {"iterations": iterations, "tv": tv, "stride": stride, "model": _path_text(model),
                                   "device": device, "na": na, "wavelength": wavelength, "pixel_size": pixel_size,
                                   "n": n, "objective": objective, "channels": channels, "frames": frames,
                                   "psf_map": _path_text(psf_map), "psf_montage": psf_montage})
    except Cancelled:
        ijconv.jclass("ij.IJ").showStatus(f"{COMMAND}: cancelled")
        return None, None, None, None
    return result.restored, result.parameter_map, result.depth_map, result.montage


def run_map_script(imp, stride: int = 0, model: Any = None, device: str = "cpu", na: float = 0.0,
                   wavelength: float | str = "0", pixel_size: float = 0.0, n: float = 0.0,
                   objective: str = NO_OBJECTIVE, channels: str = "best", frames: str = "smooth"):
    """Entry point of the Fiji script "Estimate PSF Map": the map window (None when Esc cancelled)."""
    try:
        return estimate_map(imp, {"stride": stride, "model": _path_text(model), "device": device, "na": na,
                                  "wavelength": wavelength, "pixel_size": pixel_size, "n": n,
                                  "objective": objective, "channels": channels, "frames": frames})
    except Cancelled:
        ijconv.jclass("ij.IJ").showStatus(f"{MAP_COMMAND}: cancelled")
        return None


def describe(result: CommandResult) -> str:
    """JSON summary of a run (titles and shapes), for logs and examples."""
    images = {str(im.getTitle()): [int(im.getWidth()), int(im.getHeight()), int(im.getStackSize())]
              for im in result.images()}
    return json.dumps(images)


def run_imagej2(obj: Any, ij: Any, **values: Any) -> dict[str, Any]:
    """Run the command on an ImageJ2 Dataset/ImgPlus (or ImagePlus) with a PyImageJ gateway ``ij``.

    The input goes through PyImageJ's own converters to an ImagePlus and the results come back as Datasets
    (``ij.py.to_dataset``); keys: ``restored``, ``parameter_map``, ``depth_map`` (and ``montage``). A thin
    path: it needs Fiji/ImageJ2 and PyImageJ, and is not exercised by the tests (see
    ``examples/pyimagej_fiji.py``).
    """
    imp = ijconv.imageplus_from(obj, ij)
    result = run_command(imp, values, progress=imagej_progress())
    images = {"restored": result.restored, "parameter_map": result.parameter_map, "depth_map": result.depth_map,
              "montage": result.montage}
    return {key: ijconv.imagej2_from(im, ij) for key, im in images.items() if im is not None}
