"""Argument checks shared by the Python API, the CLI and the ImageJ command: one rule per input (the settings
of a run put them together in `fiji_bridge.settings.RunSettings`), and one-line error messages (`one_line`).

Every check raises a one-line ``ValueError`` that names the parameter, before any work is done (no model
loaded, no image read, nothing allocated): bool is not a number, 2.5 is not a count, NaN is not a size.
NumPy scalars (``np.float32(0.8)``, ``np.int64(3)``) are accepted wherever Python numbers are.
"""
from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable

#: A progress callback: ``progress(fraction, message)`` with ``fraction`` in [0, 1] (tqdm bars, ImageJ's status
#: line, napari's progress bar).
Progress = Callable[[float, str], None]

#: Most Richardson–Lucy iterations accepted anywhere (the CLI, the ImageJ command, `deconvolve`): RL
#: converges in tens to hundreds of iterations; a larger count is a typing error that would run for days.
MAX_ITERATIONS = 10_000
#: Largest PSF grid side (nodes) of the deconvolution; the default grid has at most 16.
MAX_GRID = 128


#: Value of ``iterations`` / ``tv`` that lets the image's noise level choose (`fiji_bridge.estimation.noise.auto_settings`).
AUTO = "auto"


def is_integer(value) -> bool:
    """True for Python and NumPy integers, False for bool (True is not a count) and for floats."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def is_real(value) -> bool:
    """True for Python and NumPy real numbers (int, float, np.float32, ...), False for bool and complex."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def integer(name: str, value, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; anything else is a ValueError naming ``name``."""
    if not is_integer(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
           positive: bool = False) -> float:
    """``value`` as a finite float (``positive``: > 0) in [minimum, maximum]; otherwise a ValueError."""
    if not is_real(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value:g}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else f"{minimum:g}"
        high = "inf" if maximum is None else f"{maximum:g}"
        raise ValueError(f"{name} must be in [{low}, {high}], got {value:g}")
    return value


def grid(value, shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """A PSF grid ``(gy, gx)`` of integers >= 1 (at most `MAX_GRID`, and at most half the image side
    when ``shape`` is known: each grid cell needs 2 pixels)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"grid must be two integers (gy, gx), got {value!r}")
    gy, gx = (integer("grid", v, minimum=1, maximum=MAX_GRID) for v in value)
    if shape is not None and (gy > shape[0] // 2 or gx > shape[1] // 2):
        raise ValueError(f"grid: a {gy}x{gx} PSF grid does not fit an image of {shape[0]}x{shape[1]} pixels "
                         "(each grid cell needs at least 2 pixels)")
    return gy, gx


def real_image_dtype(name: str, dtype) -> None:
    """Images hold real numbers: integer or floating point, not bool, complex, strings or objects."""
    if dtype.kind not in "uif":
        what = {"b": "boolean", "c": "complex"}.get(dtype.kind, str(dtype))
        raise ValueError(f"{name} must hold real numbers (integer or floating point), got {what} pixels "
                         f"(dtype {dtype})")


def one_line(exc: BaseException, *, bare_value_errors: bool = False, limit: int | None = None) -> str:
    """The message of ``exc`` on one line: ``Type: message`` (``Type`` alone when there is no message).

    ``bare_value_errors``: a ValueError (the input errors of `RunSettings` and the checks here, which name the
    parameter) is its message alone, as the ImageJ command shows it. ``limit`` cuts the line (batch manifests).
    """
    text = " ".join(str(exc).split())
    if not text:
        line = type(exc).__name__
    elif bare_value_errors and isinstance(exc, ValueError):
        line = text
    else:
        line = f"{type(exc).__name__}: {text}"
    return line if limit is None else line[:limit]


def optional_import(module: str, extra: str, purpose: str):
    """``module``, imported; when it is missing, a one-line RuntimeError naming the extra that installs it
    (scikit-image and matplotlib are optional: only simulations and the report figure need them)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise RuntimeError(f"{purpose} needs {top}, which is not installed: pip install 'semiblind[{extra}]'") from None
