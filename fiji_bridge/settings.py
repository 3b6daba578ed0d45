"""The settings of a deconvolution run: one validated dataclass, the single place for their defaults, ranges,
meanings and error messages.

`RunSettings` is what `fiji_bridge.deconvolve`, `fiji_bridge.pipeline.process_file`, ``semiblind deconvolve``,
``semiblind batch`` and the ImageJ command ("Semi-Blind Deconvolution": dialog, macro keys, Fiji script) map
onto:

* the Python API passes its keywords through ``RunSettings(...)`` (a ValueError naming the parameter);
* the command line's options are generated from it (`add_arguments`, `from_args`);
* the ImageJ dialog, macro options and the Fiji script's ``#@`` parameters are parsed by `RunSettings.parse`
  (strings as typed; 0 or an empty field means "auto"/"default" there, see `DIALOG`); what cannot be generated
  (the ``#@`` header, the Java dialog table, the shipped macros) is checked against it by
  ``tests/test_settings.py``.

``"auto"`` for ``iterations``/``tv`` lets the image's noise level choose them
(`fiji_bridge.estimation.noise.auto_settings`, applied by `fiji_bridge.pipeline.resolve_settings`).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fiji_bridge import validation
from fiji_bridge.validation import AUTO, MAX_ITERATIONS

#: Where RL and the CNN may run.
DEVICES = ("cpu", "gpu", "auto")
#: The optics overrides (None: from the image's calibration and the model's optics; `Optics` checks them).
OPTICS_FIELDS = ("na", "wavelength", "pixel_size", "n")
#: Where the map of each channel of a multi-channel image comes from (`fiji_bridge.stacks`).
CHANNEL_MODES = ("best", "joint", "independent")
#: Where the map of each frame of a time-lapse comes from (`fiji_bridge.stacks`).
FRAME_MODES = ("smooth", "single", "independent")
#: The ImageJ dialog's objective entry for "no preset: NA and n as typed".
NO_OBJECTIVE = "none/custom"


def _tv_max() -> float:
    from fiji_bridge.restoration.richardson_lucy import TV_MAX
    return TV_MAX


def min_tile() -> int:
    """Smallest tile side: tiles overlap by at least ``MIN_OVERLAP`` pixels on each side, at most half a tile."""
    from fiji_bridge.restoration.tiling import MIN_OVERLAP
    return 2 * MIN_OVERLAP


def _meta(help: str, *, label: str, dialog: str = "", flag: str | None = None) -> dict:
    """Field metadata: command-line help (``{...}`` filled from the ranges), the ImageJ dialog label, and the
    dialog's meaning of 0 / an empty field (``dialog``; "" = the field has no dialog entry)."""
    return {"help": help, "label": label, "dialog": dialog, "flag": flag}


@dataclass(frozen=True)
class RunSettings:
    """The settings of one deconvolution run, validated on construction (ValueError naming the first bad one).

    Parameters
    ----------
    iterations : int or 'auto'
        Richardson–Lucy iterations, 1 to `MAX_ITERATIONS`; 'auto' (default) chooses 15–60 from the image's
        photon level (fewer for noisy images, which more iterations would only make noisier).
    tv : float or 'auto'
        Total-variation weight in [0, 0.2] (0 = plain RL); 'auto' (default) chooses it from the photon level.
    stride : int, optional
        Sliding-window step of the PSF map in model pixels (default: one patch, windows side by side).
    grid : (gy, gx), optional
        PSF grid of the deconvolution, 1 to `fiji_bridge.validation.MAX_GRID` a side (default: cells of
        about two patches).
    tile : int, optional
        Deconvolve in overlapping tiles of at most ``tile`` x ``tile`` pixels, at least `min_tile` (default:
        tiles of 1024 above 4096² pixels).
    device : {'cpu', 'gpu', 'auto'}
        Where RL and the CNN run; 'auto' uses a CUDA GPU when CuPy/ORT-CUDA can.
    model : PSFModel or path, optional
        ONNX model; default: the bundled model.
    na, wavelength, pixel_size, n : float, optional
        Optics overrides (µm for lengths); None: the image's calibration (pixel size) and the model's optics.
        Checked by `fiji_bridge.Optics` when the optics are put together (messages start with "optics:").
    """

    iterations: int | str = field(default=AUTO, metadata=_meta(
        "Richardson-Lucy iterations, 1 to {max_iterations}, or 'auto' (default): 15-60 chosen from the image's "
        "estimated photon level", label="Iterations", dialog="0 = auto"))
    tv: float | str = field(default=AUTO, metadata=_meta(
        "TV weight in [0, {tv_max:g}], or 'auto' (default): chosen from the estimated photon level",
        label="TV", dialog="auto = from the noise"))
    stride: int | None = field(default=None, metadata=_meta(
        "window step in model pixels, 1 to the patch size (default: one patch)", label="Stride",
        dialog="0 = auto"))
    grid: tuple[int, int] | None = field(default=None, metadata=_meta(
        "PSF grid GYxGX (default: cells of ~2 patches)", label="Grid"))
    tile: int | None = field(default=None, metadata=_meta(
        "deconvolve in overlapping tiles of at most N x N pixels, N >= {min_tile} (default: 1024 above 4096² "
        "pixels)", label="Tile"))
    device: str = field(default="cpu", metadata=_meta("where RL and the CNN run (default: cpu)", label="Device",
                                                      dialog="cpu"))
    model: Any = field(default=None, metadata=_meta("ONNX model (default: bundled)", label="Model",
                                                    dialog="empty = bundled"))
    na: float | None = field(default=None, metadata=_meta("numerical aperture", label="NA",
                                                          dialog="0 = model's"))
    wavelength: float | None = field(default=None, metadata=_meta(
        "emission wavelength (µm)", label="Wavelength", dialog="0 = model's"))
    pixel_size: float | None = field(default=None, metadata=_meta(
        "pixel size in the object plane (µm)", label="Pixel_size", dialog="0 = image calibration"))
    n: float | None = field(default=None, metadata=_meta(
        "immersion refractive index (default 1.0 / model's)", label="n", dialog="0 = model's"))
    objective: str | None = field(default=None, metadata=_meta(
        "objective preset that sets NA and n together, e.g. 60x/1.4-oil (fiji_bridge.optics.objectives; default: "
        "the file's metadata, else the model's optics)", label="Objective"))
    channels: str = field(default="best", metadata=_meta(
        "maps of a multi-channel image: best (the channel with most photons, rendered at each channel's emission "
        "wavelength; default), joint (all channels averaged) or independent", label="Channels"))
    frames: str = field(default="smooth", metadata=_meta(
        "maps of a time-lapse: smooth (per frame, smoothed over time; default), single (one map for all frames) "
        "or independent", label="Frames"))
    psf_map: Any = field(default=None, metadata=_meta(
        "deconvolve with this saved PSF map (MAP.tif of --map or psf-map) instead of estimating one",
        label="PSF_map"))

    def __post_init__(self) -> None:
        if self.iterations != AUTO:
            self._set("iterations", validation.integer("iterations", self.iterations, minimum=1,
                                                       maximum=MAX_ITERATIONS))
        if self.tv != AUTO:
            self._set("tv", validation.number("tv", self.tv, minimum=0.0, maximum=_tv_max()))
        if self.stride is not None:
            self._set("stride", validation.integer("stride", self.stride, minimum=1))
        if self.grid is not None:
            self._set("grid", validation.grid(self.grid))
        if self.tile is not None:
            self._set("tile", validation.integer("tile", self.tile, minimum=min_tile()))
        check_device(self.device)
        if self.objective is not None:
            from fiji_bridge.optics.objectives import objective
            objective(str(self.objective))                 # "objective: unknown preset ... (known: ...)"
        if self.channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {', '.join(CHANNEL_MODES)}, got {self.channels!r}")
        if self.frames not in FRAME_MODES:
            raise ValueError(f"frames must be one of {', '.join(FRAME_MODES)}, got {self.frames!r}")
        if isinstance(self.wavelength, (list, tuple)):     # one emission wavelength per channel
            self._set("wavelength", tuple(validation.number("wavelength", w, positive=True) for w in self.wavelength))
        if self.model is not None and not isinstance(self.model, (str, Path)) and not _is_model(self.model):
            raise ValueError(f"model must be a PSFModel or the path of an .onnx file, got {self.model!r}")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Checks that need the image size: the PSF grid must fit the image (2 pixels a cell)."""
        if self.grid is not None:
            validation.grid(self.grid, (int(shape[0]), int(shape[1])))

    def optics(self) -> dict[str, Any]:
        """The optics overrides as keywords of `fiji_bridge.pipeline.image_optics` (None: not given), with the
        objective preset."""
        return {**{k: getattr(self, k) for k in OPTICS_FIELDS}, "objective": self.objective}

    def options(self) -> dict[str, Any]:
        """The settings that differ from the defaults, as keywords of `fiji_bridge.pipeline.process_file`
        (what a batch records in its manifest)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def keywords(self) -> dict[str, Any]:
        """Every setting, as keywords of `fiji_bridge.pipeline.process_file`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """All settings, JSON-compatible (a model object as its path)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["model"] is not None:
            d["model"] = str(getattr(d["model"], "path", d["model"]))
        if d["grid"] is not None:
            d["grid"] = list(d["grid"])
        return d

    # ------------------------------------------------------------------ ImageJ dialog / macro / script

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> "RunSettings":
        """Settings from strings or numbers as typed in the ImageJ dialog, a macro or the Fiji script.

        There an empty field or None means the default, and 0 means "auto" for ``iterations`` and ``stride``
        and "from the image calibration / the model" for the optics (a dialog's numeric field cannot hold
        "auto"); ``"auto"`` is accepted for ``iterations`` and ``tv``; ``wavelength`` may list one value per
        channel ("0.46,0.52"); ``objective`` `NO_OBJECTIVE` (the dropdown's first entry) means none. ``tv`` = 0 is plain RL, so it has no
        "0 = auto". Keys that are not settings are a ValueError; raises a one-line ValueError naming the
        parameter.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(names))})")
        get = values.get
        kw: dict[str, Any] = {}
        for name in ("iterations", "tv"):
            text = get(name)
            if _blank(text) or (isinstance(text, str) and text.strip().lower() == AUTO):
                continue
            value = _dialog_value(name, text)
            if name == "iterations" and value == 0:
                continue                                    # 0 = auto in the dialog
            kw[name] = value                                # ranges and messages: those of the API
        kw["stride"] = _dialog_integer("stride", get("stride")) or None
        for name in ("grid", "tile"):
            if not _blank(get(name)):
                kw[name] = get(name)
        for name in OPTICS_FIELDS:
            if name == "wavelength" and "," in str(get(name) or ""):   # one emission wavelength per channel
                kw[name] = tuple(_dialog_number(name, w, minimum=0.0) for w in str(get(name)).split(","))
                continue
            kw[name] = _dialog_number(name, get(name), minimum=0.0) or None
        objective = "" if get("objective") is None else str(get("objective")).strip()
        if objective.lower() not in ("", NO_OBJECTIVE):
            kw["objective"] = objective
        for name in ("channels", "frames"):
            if not _blank(get(name)):
                kw[name] = str(get(name)).strip().lower()
        for name in ("model", "psf_map"):
            path_text = "" if get(name) is None else str(get(name)).strip()
            if path_text:
                path = Path(path_text).expanduser()
                if not path.is_file():
                    raise ValueError(f"{name}: file not found: {path}")
                kw[name] = path
        kw["device"] = str(get("device") or "cpu").strip().lower()
        return cls(**kw)

    @classmethod
    def dialog_defaults(cls) -> dict[str, str]:
        """What the ImageJ dialog shows for each setting it has, before optics are known (strings)."""
        out = {}
        for f in fields(cls):
            if not f.metadata["dialog"]:
                continue
            if f.default == AUTO:
                out[f.name] = "0" if f.name == "iterations" else AUTO
            elif f.default is None:
                out[f.name] = "" if f.name == "model" else "0"
            else:
                out[f.name] = str(f.default)
        return out


#: Settings the ImageJ command offers (dialog / macro keys / Fiji script), in dialog order.
DIALOG = tuple(f.name for f in fields(RunSettings) if f.metadata["dialog"])


def check_device(device: Any) -> str:
    """``device`` must be one of `DEVICES` (one-line ValueError)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
    return device


def _is_model(obj: Any) -> bool:
    from fiji_bridge.estimation.model import PSFModel
    return isinstance(obj, PSFModel)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _dialog_value(name: str, value: Any) -> int | float:
    """A number typed in a dialog or macro field: an int when it is a whole number (so "30" and "30.0" are 30
    iterations), else a float; the range is checked by `RunSettings`."""
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    return int(number) if math.isfinite(number) and number == int(number) else number


def _dialog_number(name: str, value: Any, *, minimum: float) -> float:
    """A number typed in a dialog/macro (0 when blank)."""
    if _blank(value):
        return 0.0
    number = float(_dialog_value(name, value))
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
    return number


def _dialog_integer(name: str, value: Any) -> int:
    number = _dialog_number(name, value, minimum=0.0)
    if number != int(number):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)


# ---------------------------------------------------------------------------------------- command line

#: The options of each command, generated by `add_arguments`.
DECONVOLVE_OPTIONS = ("iterations", "tv", "stride", "grid", "tile", "model", "device", *OPTICS_FIELDS, "objective",
                      "channels", "frames", "psf_map")
MAP_OPTIONS = ("stride", "model", "device", *OPTICS_FIELDS, "objective")


def _checked(check):
    """An argparse type from a check of `RunSettings`: the same rule as the API, a one-line message."""
    def parse(text: str):
        try:
            value = float(text) if any(c in text.lower() for c in ".en") else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(" must ", 1)[-1].join(("must ", ""))) from None
    return parse


def _or_auto(parse):
    def parse_or_auto(text: str):
        return AUTO if text.strip().lower() == AUTO else parse(text)
    return parse_or_auto


def _per_channel(parse):
    """A number, or comma-separated numbers (one per channel) as a tuple."""
    def parse_list(text: str):
        values = tuple(parse(t) for t in text.split(",") if t.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        return values[0] if len(values) == 1 and "," not in text else values
    return parse_list


def _grid(text: str) -> tuple[int, int]:
    try:
        gy, gx = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GYxGX such as 4x4, got {text!r}") from None
    try:
        return validation.grid((gy, gx))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _argument_types() -> dict[str, Any]:
    positive = _checked(lambda v: validation.number("value", v, positive=True))
    return {
        "iterations": _or_auto(_checked(lambda v: validation.integer("value", v, minimum=1,
                                                                     maximum=MAX_ITERATIONS))),
        "tv": _or_auto(_checked(lambda v: validation.number("value", v, minimum=0.0, maximum=_tv_max()))),
        "stride": _checked(lambda v: validation.integer("value", v, minimum=1)),
        "grid": _grid,
        "tile": _checked(lambda v: validation.integer("value", v, minimum=min_tile())),
        "model": str, "device": str, "channels": str, "frames": str, "objective": str, "psf_map": str,
        **{k: positive for k in OPTICS_FIELDS},
        "wavelength": _per_channel(positive),
    }


def add_arguments(parser: argparse.ArgumentParser, names: Sequence[str] = DECONVOLVE_OPTIONS, *,
                  required_optics: bool = False) -> None:
    """Add ``--NAME`` options for the settings ``names`` to ``parser``, with the defaults, ranges and help of
    `RunSettings`; the optics go into their own group. `from_args` turns the parsed options back into
    `RunSettings`."""
    types = _argument_types()
    specs = {f.name: f for f in fields(RunSettings)}
    ranges = {"max_iterations": MAX_ITERATIONS, "tv_max": _tv_max(), "min_tile": min_tile()}
    optics_group = None
    for name in names:
        f = specs[name]
        target: Any = parser
        kwargs: dict[str, Any] = {"type": types[name], "default": f.default,
                                  "help": f.metadata["help"].format(**ranges)}
        if name in ("device", "channels", "frames"):
            kwargs.update(choices=list({"device": DEVICES, "channels": CHANNEL_MODES, "frames": FRAME_MODES}[name]),
                          type=None)
            del kwargs["type"]
        if name in OPTICS_FIELDS or name == "objective":
            if optics_group is None:
                optics_group = parser.add_argument_group(
                    "optics (default: the image's calibration and the model's optics)")
            target = optics_group
            if required_optics and name != "n":
                kwargs.update(required=True)
                del kwargs["default"]
        target.add_argument(f.metadata["flag"] or "--" + name.replace("_", "-"), **kwargs)


def from_args(args: argparse.Namespace) -> RunSettings:
    """`RunSettings` from options added by `add_arguments` (absent ones keep their defaults)."""
    return RunSettings(**{f.name: getattr(args, f.name) for f in fields(RunSettings) if hasattr(args, f.name)})


__all__ = ["AUTO", "CHANNEL_MODES", "DEVICES", "FRAME_MODES", "DIALOG", "MAX_ITERATIONS", "NO_OBJECTIVE", "OPTICS_FIELDS", "RunSettings", "add_arguments",
           "check_device", "from_args", "min_tile"]
