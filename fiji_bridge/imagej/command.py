"""The Python side of the "Semi-Blind Deconvolution" command of ImageJ / Fiji.

Three entry points share `run_command`:

* the ImageJ 1 menu command / macro ``run("Semi-Blind Deconvolution", "iterations=30 ...")`` in a JVM
  hosted by Python: `install` starts the JVM, installs a JPype ``@JImplements`` handler into the Java shim
  (``plugins/java``) and registers the command;
* the SciJava script command ``plugins/scripts/Plugins/Deconvolution/Semi-Blind_Deconvolution.py`` in Fiji's
  Python mode, which calls `run_script`;
* Python code that has an ImagePlus (`run_command`).

Progress goes to ImageJ's progress bar and status line; bad parameters raise a one-line ValueError naming
the parameter, which the Java shim turns into ``IJ.error`` and a macro abort (the JVM stays usable).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fiji_bridge import imagej as ijconv
from fiji_bridge.optics.parameters import Optics
from fiji_bridge.settings import DIALOG, RunSettings
from fiji_bridge.settings import check_device as settings_check_device
from fiji_bridge.validation import Progress, one_line

#: Menu command name (ImageJ 1 command table, Fiji menu label).
COMMAND = "Semi-Blind Deconvolution"
#: Parameter keys of the dialog, macro and Fiji script: the run settings the command offers
#: (`fiji_bridge.settings.DIALOG`), then the command's own output option.
KEYS = (*DIALOG, "psf_montage")


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
    def parse(cls, values: Mapping[str, Any]) -> "CommandParameters":
        """Validate strings or numbers (dialog fields, macro options, script parameters).

        Empty strings and None mean "default"; 0 means "auto" for ``iterations``/``stride`` and "from the image
        calibration / the model" for the optics; ``tv`` takes "auto" or a number (see `RunSettings.parse`).
        Raises a one-line ValueError naming the parameter.
        """
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(KEYS)})")
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


@dataclass
class CommandResult:
    """Result images of one run (ImagePlus objects, not shown) and the Python-side result."""

    restored: Any
    parameter_map: Any
    depth_map: Any
    montage: Any | None
    deconvolution: Any

    def images(self) -> list:
        """Images to show, restored image first."""
        return [im for im in (self.restored, self.parameter_map, self.depth_map, self.montage) if im is not None]


@functools.lru_cache(maxsize=8)
def _model_optics(model: str | None) -> Optics:
    """The model's optics (cached: reading the model costs a few ms per run)."""
    from fiji_bridge.pipeline import default_optics
    return default_optics(None, model=model)


def resolve_optics(params: CommandParameters, calibrated: float | None) -> Optics:
    """Optics of the run: explicit parameters > calibration (pixel size) > the model's optics."""
    from fiji_bridge.pipeline import image_optics
    base = _model_optics(str(params.model.resolve()) if params.model else None)
    return image_optics(calibrated, base, na=params.na, wavelength=params.wavelength,
                        pixel_size=params.pixel_size, n=params.n)


def image_plane(imp) -> np.ndarray:
    """The single 2-D plane of ``imp`` as float32 (stacks are refused with a one-line hint).

    Signed 16-bit images (stored by ImageJ with a +32768 offset) get their true values back.
    """
    data = ijconv.imageplus_to_numpy(imp)
    if data.ndim != 2:
        raise ValueError(f"image {imp.getTitle()} has {int(np.prod(data.shape[:-2]))} planes; the command "
                         "deconvolves single 2-D images (Image > Stacks > Stack to Images, or a macro loop)")
    plane = data.astype(np.float32, copy=False)
    if data.dtype == np.uint16 and bool(imp.getCalibration().isSigned16Bit()):
        plane = plane - 32768.0
    return plane


def run_command(imp, values: Mapping[str, Any] | CommandParameters, progress: Progress | None = None,
                ) -> CommandResult:
    """Deconvolve the ImagePlus ``imp`` and build the result ImagePlus objects.

    Parameters
    ----------
    imp : ij.ImagePlus
        8/16/32-bit single-plane image; its calibration gives the default pixel size.
    values : mapping or CommandParameters
        Parameters by key (see `KEYS`); strings as typed in a dialog or macro are accepted.
    progress : callable, optional
        ``progress(fraction, message)``; default: ImageJ's progress bar and status line.

    Returns
    -------
    CommandResult
        ``restored`` (32-bit, titled ``<input>_restored``, calibration copied), ``parameter_map`` (labelled
        stack), ``depth_map`` (µm), ``montage`` (PSF grid; only with ``psf_montage``).
    """
    from fiji_bridge.pipeline import deconvolve
    params = values if isinstance(values, CommandParameters) else CommandParameters.parse(values)
    check_device(params.device)
    if imp is None:
        raise ValueError("image: no image is open")
    image = image_plane(imp)
    try:
        calibrated = ijconv.pixel_size_um(imp)
    except ValueError as exc:
        if params.pixel_size is None:
            raise ValueError(f"{exc}; give pixel_size explicitly") from None
        calibrated = None
    report = progress or imagej_progress()
    with warnings.catch_warnings(record=True) as caught, _optics_fields_named():
        warnings.simplefilter("always")
        optics = resolve_optics(params, calibrated)
        report(0.0, "estimating the PSF map")
        result = deconvolve(image, iterations=params.iterations, tv=params.tv, model=params.model,
                            stride=params.stride, optics=optics, device=params.device, progress=report)
    for w in caught:
        _log(f"{COMMAND}: {w.message}")
    title = str(imp.getTitle())
    info = {"source": title, "software": "semiblind", "parameters": _jsonable(params),
            "optics": optics.to_dict(), "psf_grid": list(np.asarray(result.psfs).shape[:2]),
            "calibrated_pixel_size_um": calibrated}
    restored = ijconv.restored_to_imageplus(result.image, imp, info=info)
    if calibrated is None or not math.isclose(calibrated, optics.pixel_size, rel_tol=1e-6):
        ijconv.set_pixel_size(restored, optics.pixel_size)    # the pixel size it was restored with
    m = result.psf_map
    pmap = ijconv.parameter_map_to_imageplus(m, ijconv.result_title(title, "psfmap"))
    depth = ijconv.depth_map_to_imageplus(m, ijconv.result_title(title, "depth"))
    montage = (ijconv.psf_montage_to_imageplus(result.psfs, m.optics.pixel_size, ijconv.result_title(title, "psfs"))
               if params.psf_montage else None)
    report(1.0, "done")
    return CommandResult(restored, pmap, depth, montage, result)


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


@contextlib.contextmanager
def _optics_fields_named():
    """Optics errors name the dialog / macro fields, not the command line's flags."""
    try:
        yield
    except ValueError as exc:
        text = str(exc)
        if not text.startswith("optics:"):
            raise
        text = text.replace(". Check --pixel-size/--na/--wavelength", "").rstrip(". ")
        raise ValueError(f"{text}; {OPTICS_FIELDS_HINT}") from None


def _jsonable(params: CommandParameters) -> dict:
    d = {**params.settings.to_dict(), "psf_montage": params.psf_montage}
    return {k: d[k] for k in KEYS}


def default_parameters(imp) -> dict[str, str]:
    """Dialog defaults for ``imp``: optics of the bundled model, pixel size from the calibration."""
    optics = _model_optics(None)
    pixel = None
    if imp is not None:
        try:
            pixel = ijconv.pixel_size_um(imp)
        except ValueError:
            pixel = None
    return {**RunSettings.dialog_defaults(), "na": repr(optics.na), "wavelength": repr(optics.wavelength),
            "pixel_size": repr(pixel or optics.pixel_size), "n": repr(optics.n), "psf_montage": "false"}


# ------------------------------------------------------------------------------------- ImageJ glue


def imagej_progress(prefix: str = COMMAND) -> Progress:
    """A progress callback that drives ``IJ.showProgress`` and ``IJ.showStatus``."""
    IJ = ijconv.jclass("ij.IJ")

    def report(fraction: float, message: str) -> None:
        f = min(max(float(fraction), 0.0), 1.0)
        IJ.showProgress(f if f < 1.0 else 1.0)
        IJ.showStatus(f"{prefix}: {message}")
    return report


def _log(message: str) -> None:
    ijconv.jclass("ij.IJ").log(str(message))


@contextlib.contextmanager
def _as_java_error(java_exception):
    """Every Python failure reaches ImageJ as a Java exception with a one-line message (tracebacks of
    unexpected errors go to ImageJ's log), never as a crash."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, ValueError):
            _log("".join(traceback.format_exception(exc)))
        raise java_exception(one_line(exc, bare_value_errors=True)) from None


_HANDLER: dict[str, Any] = {}


def _handler():
    """The JPype proxy implementing ``semiblind.CommandHandler`` (created once the JVM runs)."""
    if "instance" in _HANDLER:
        return _HANDLER["instance"]
    import jpype
    from jpype import JImplements, JOverride

    HashMap = jpype.JClass("java.util.HashMap")
    ImagePlus = jpype.JClass("ij.ImagePlus")
    IllegalArgument = jpype.JClass("java.lang.IllegalArgumentException")

    @JImplements("semiblind.CommandHandler")
    class CommandHandler:
        """Java-facing handler: strings in, ImagePlus[] out, Java exceptions with one-line messages."""

        @JOverride
        def defaults(self, imp):
            with _as_java_error(IllegalArgument):
                out = HashMap()
                for key, value in default_parameters(imp).items():
                    out.put(key, value)
                return out

        @JOverride
        def run(self, imp, params):
            with _as_java_error(IllegalArgument):
                values = {str(k): str(v) for k, v in dict(params).items()}
                result = run_command(imp, values)
                return jpype.JArray(ImagePlus)(result.images())

    _HANDLER["instance"] = CommandHandler()
    return _HANDLER["instance"]


def install(*, headless: bool | None = None) -> bool:
    """Start the JVM if needed, install the Python handler and register the command (idempotent).

    Parameters
    ----------
    headless : bool, optional
        Passed to `fiji_bridge.imagej.start_jvm` when this call starts the JVM (default True).

    Returns
    -------
    bool
        True when the command was also added to an ImageJ window's Plugins › Deconvolution menu.
    """
    if not ijconv.jvm_started():
        ijconv.start_jvm(headless=True if headless is None else headless)
    bridge = ijconv.jclass("semiblind.SemiBlindBridge")
    bridge.setHandler(_handler())
    return bool(bridge.register(COMMAND))


def last_error() -> str:
    """One-line message of the last failed run of the command ("" after a successful run)."""
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


def run_script(imp, iterations: int = 0, tv: float | str = "auto", stride: int = 0, model: Any = None,
               device: str = "cpu", na: float = 0.0, wavelength: float = 0.0, pixel_size: float = 0.0,
               n: float = 0.0, psf_montage: bool = False) -> tuple:
    """Entry point of the Fiji script command: returns (restored, parameter map, depth map, montage or None).

    ``iterations`` 0 and ``tv`` "auto" (the defaults) let the image's noise choose them; zero optics values mean
    "from the image calibration / the model". ``model`` may be a ``java.io.File``.
    """
    model_path = "" if model is None else str(model.getPath() if hasattr(model, "getPath") else model)
    result = run_command(imp, {"iterations": iterations, "tv": tv, "stride": stride, "model": model_path,
                               "device": device, "na": na, "wavelength": wavelength,
                               "pixel_size": pixel_size, "n": n, "psf_montage": psf_montage})
    return result.restored, result.parameter_map, result.depth_map, result.montage


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
