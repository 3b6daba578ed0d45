"""ImagePlus <-> NumPy conversion (the counterpart of PyImageJ's ``convert.py``): ``ij.ImagePlus``
(8/16/32-bit; single planes, stacks and hyperstacks) -> NumPy with bulk array copies (`imageplus_to_numpy`,
`imageplus_axes`), NumPy -> ``ImagePlus`` (`numpy_to_imageplus`), calibration <-> pixel size in µm
(`pixel_size_um`, `set_pixel_size`) and a thin path for ImageJ2 objects through a PyImageJ gateway
(`to_numpy`, `to_java`, `imageplus_from`, `imagej2_from`).

ImagePlus, ImageStack and Calibration are the same classes in Fiji, so these conversions are what Fiji
users run. Pixels always cross the language boundary as whole Java primitive arrays (one copy per plane),
never pixel by pixel.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from fiji_bridge.imagej._jvm import is_imageplus, jclass
from fiji_bridge.io.units import unit_to_um

#: ImagePlus type constants (ImagePlus.GRAY8 ... COLOR_RGB) -> NumPy dtype.
_IJ_DTYPES = {0: np.uint8, 1: np.uint16, 2: np.float32}
_IJ_RGB_TYPES = {3, 4}   # COLOR_256, COLOR_RGB

# ------------------------------------------------------------------------------------- calibration


def pixel_size_um(imp) -> float | None:
    """Pixel size in µm from an ImagePlus calibration; None when uncalibrated.

    Raises
    ------
    ValueError
        For non-square pixels (deconvolution needs square pixels) or a unit that is not a length.
    """
    cal = imp.getCalibration()
    factor = unit_to_um(str(cal.getUnit()))
    width, height = float(cal.pixelWidth), float(cal.pixelHeight)
    if factor is None or not np.isfinite(width) or width <= 0:
        return None
    if not np.isclose(width, height, rtol=1e-3):
        raise ValueError(f"calibration: pixels are not square ({width} x {height} {cal.getUnit()})")
    return width * factor


def set_pixel_size(imp, pixel_size: float | None, *, origin: tuple[float, float] = (0.0, 0.0),
                   value_unit: str | None = None) -> None:
    """Calibrate ``imp`` with a square pixel size in µm (None: leave uncalibrated).

    ``origin`` is ImageJ's (xOrigin, yOrigin) in pixels; ``value_unit`` the unit of the pixel values.
    """
    cal = imp.getCalibration().copy()
    if pixel_size is not None:
        if not np.isfinite(pixel_size) or pixel_size <= 0:
            raise ValueError(f"pixel_size must be a positive finite number, got {pixel_size!r}")
        cal.pixelWidth = float(pixel_size)
        cal.pixelHeight = float(pixel_size)
        cal.pixelDepth = 1.0
        cal.setUnit("micron")
        cal.xOrigin = float(origin[0])
        cal.yOrigin = float(origin[1])
    if value_unit is not None:
        cal.setValueUnit(value_unit)
    imp.setCalibration(cal)


# ---------------------------------------------------------------------------- ImagePlus -> NumPy


def imageplus_axes(imp, *, squeeze: bool = True) -> str:
    """Axis letters of `imageplus_to_numpy`'s result: a subset of ``"TZCYX"`` in that order."""
    sizes = {"T": imp.getNFrames(), "Z": imp.getNSlices(), "C": imp.getNChannels()}
    lead = "".join(a for a in "TZC" if not squeeze or sizes[a] > 1)
    return lead + "YX"


def imageplus_to_numpy(imp, *, squeeze: bool = True) -> np.ndarray:
    """Copy the pixels of an ImagePlus into a NumPy array.

    Parameters
    ----------
    imp : ij.ImagePlus
        8-bit (-> uint8), 16-bit (-> uint16) or 32-bit (-> float32) image, stack or hyperstack.
    squeeze : bool
        Drop T/Z/C axes of length 1 (default); False gives a 5-D (T, Z, C, Y, X) array.

    Returns
    -------
    ndarray
        Shape ``(T, Z, C, Y, X)`` minus squeezed axes (see `imageplus_axes`), a copy.

    Raises
    ------
    ValueError
        For RGB/indexed-colour images and ImagePlus objects without pixels.
    """
    if imp is None:
        raise ValueError("image: no ImagePlus given")
    kind = int(imp.getType())
    if kind in _IJ_RGB_TYPES:
        raise ValueError(f"image {imp.getTitle()!s} is RGB/colour; convert it to grayscale first "
                         "(Image > Type > 32-bit, or split channels)")
    if kind not in _IJ_DTYPES:
        raise ValueError(f"image: unsupported ImagePlus type {kind}")
    stack = imp.getStack()
    width, height = int(imp.getWidth()), int(imp.getHeight())
    n_c, n_z, n_t = int(imp.getNChannels()), int(imp.getNSlices()), int(imp.getNFrames())
    n = int(stack.getSize())
    if n != n_c * n_z * n_t or width == 0 or height == 0:
        raise ValueError(f"image: stack of {n} planes does not match C={n_c} Z={n_z} T={n_t}")
    out = np.empty((n, height, width), dtype=_IJ_DTYPES[kind])
    for i in range(n):
        out[i] = _plane_to_numpy(stack.getPixels(i + 1), out.dtype).reshape(height, width)
    out = out.reshape(n_t, n_z, n_c, height, width)
    if squeeze:
        keep = [ax for ax, size in enumerate((n_t, n_z, n_c)) if size > 1] + [3, 4]
        out = out.reshape([out.shape[ax] for ax in keep])
    return out


def _plane_to_numpy(pixels, dtype: np.dtype) -> np.ndarray:
    """A Java primitive array (byte/short/float) as NumPy in one buffer copy, unsigned for 8/16 bit."""
    if pixels is None:
        raise ValueError("image: a plane has no pixels (virtual stack that cannot be read?)")
    raw = np.asarray(memoryview(pixels))
    if dtype == np.uint8:
        return raw.view(np.uint8)
    if dtype == np.uint16:
        return raw.view(np.uint16)
    return raw.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------- NumPy -> ImagePlus


def _java_plane(plane: np.ndarray):
    """A fresh Java primitive array holding ``plane`` (uint8/uint16/float32), filled in bulk."""
    import jpype
    flat = np.ascontiguousarray(plane).ravel()
    if flat.dtype == np.uint8:
        arr = jpype.JArray(jpype.JByte)(flat.size)
        arr[:] = flat.view(np.int8)
    elif flat.dtype == np.uint16:
        arr = jpype.JArray(jpype.JShort)(flat.size)
        arr[:] = flat.view(np.int16)
    else:
        arr = jpype.JArray(jpype.JFloat)(flat.size)
        arr[:] = flat.astype(np.float32, copy=False)
    return arr


def _ij_dtype(array: np.ndarray) -> np.dtype:
    """uint8/uint16/float32 are kept; everything else real becomes float32."""
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return array.dtype
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if array.dtype.kind not in "uif":
        raise ValueError(f"array: unsupported dtype {array.dtype} (need integer or float)")
    return np.dtype(np.float32)


def numpy_to_imageplus(array: np.ndarray, title: str = "image", *, pixel_size: float | None = None,
                       axes: str | None = None, labels: Sequence[str] | None = None,
                       info: dict | str | None = None):
    """Build an ImagePlus from a NumPy array (bulk copy, one Java array per plane).

    Parameters
    ----------
    array : ndarray
        2-D plane or stack/hyperstack with axes ``axes`` ending in ``"YX"``. uint8, uint16 and float32
        keep their type (8-, 16-, 32-bit); other real types become 32-bit float, bool becomes 8-bit.
    title : str
        Image title.
    pixel_size : float, optional
        Pixel size in µm written into the calibration.
    axes : str, optional
        Axis letters out of ``"TZCYX"``, e.g. ``"ZYX"`` or ``"TZCYX"``; default ``"YX"`` for 2-D,
        ``"ZYX"`` for 3-D, ``"TZCYX"`` order for more.
    labels : sequence of str, optional
        Slice labels, one per plane (in stack order).
    info : dict or str, optional
        Stored as the "Info" property (Image > Show Info; saved in TIFFs); dicts as JSON.

    Returns
    -------
    ij.ImagePlus
    """
    array = np.asarray(array)
    if array.ndim < 2:
        raise ValueError(f"array: need at least 2 dimensions (Y, X), got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"array: empty shape {array.shape}")
    axes = _check_axes(axes, array.ndim)
    dtype = _ij_dtype(array)
    sizes = {a: 1 for a in "TZC"}
    sizes.update({a: s for a, s in zip(axes[:-2], array.shape[:-2])})
    order = [axes.index(a) for a in "TZC" if a in axes] + [array.ndim - 2, array.ndim - 1]
    full = array.transpose(order).reshape(sizes["T"], sizes["Z"], sizes["C"], *array.shape[-2:])
    height, width = array.shape[-2:]
    planes = full.reshape(-1, height, width).astype(dtype, copy=False)
    if labels is not None and len(labels) != planes.shape[0]:
        raise ValueError(f"labels: {len(labels)} labels for {planes.shape[0]} planes")
    ImageStack = jclass("ij.ImageStack")
    stack = ImageStack(int(width), int(height))
    for i, plane in enumerate(planes):
        stack.addSlice(str(labels[i]) if labels is not None else None, _java_plane(plane))
    imp = jclass("ij.ImagePlus")(str(title), stack)
    imp.setDimensions(sizes["C"], sizes["Z"], sizes["T"])
    if sum(s > 1 for s in sizes.values()) > 1:
        imp.setOpenAsHyperStack(True)
    if pixel_size is not None:
        set_pixel_size(imp, pixel_size)
    if info is not None:
        imp.setProperty("Info", info if isinstance(info, str) else json.dumps(info, indent=1, default=float))
    _reset_display(imp, planes)
    return imp


def _check_axes(axes: str | None, ndim: int) -> str:
    if axes is None:
        return {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}.get(ndim) or _bad_axes(axes, ndim)
    axes = axes.upper()
    if (len(axes) != ndim or not axes.endswith("YX") or len(set(axes)) != ndim
            or any(a not in "TZC" for a in axes[:-2])):
        _bad_axes(axes, ndim)
    return axes


def _bad_axes(axes: str | None, ndim: int) -> str:
    raise ValueError(f"axes: {axes!r} does not describe a {ndim}-D array (letters of TZC then YX)")


def _reset_display(imp, planes: np.ndarray) -> None:
    """Display range over the whole stack (ImageJ otherwise uses the first plane only)."""
    if planes.dtype == np.uint8:
        imp.setDisplayRange(0, 255)
        return
    finite = planes if planes.dtype != np.float32 else planes[np.isfinite(planes)]   # NaN = "no data"
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    imp.setDisplayRange(lo, hi if hi > lo else lo + 1.0)


# ------------------------------------------------------------------------- PyImageJ / ImageJ2 path


def to_numpy(obj: Any, ij: Any = None) -> np.ndarray:
    """NumPy pixels of an ImagePlus, or of an ImageJ2 Dataset/ImgPlus through a PyImageJ gateway.

    ImagePlus objects use `imageplus_to_numpy`. Anything else is handed to PyImageJ's own converter
    ``ij.py.from_java`` (which returns an xarray for Datasets; its ``.values`` are returned). This
    path is deliberately thin: it needs Fiji/ImageJ2 and PyImageJ and is not exercised by the tests.
    """
    if is_imageplus(obj):
        return imageplus_to_numpy(obj)
    if isinstance(obj, np.ndarray):
        return obj
    if ij is None:
        raise ValueError("image: not an ImagePlus; pass the PyImageJ gateway (ij=...) for ImageJ2 objects")
    converted = ij.py.from_java(obj)
    return np.asarray(getattr(converted, "values", converted))


def to_java(array: np.ndarray, ij: Any = None, *, title: str = "image", pixel_size: float | None = None):
    """An ImagePlus (no gateway) or, with a PyImageJ gateway, an ImageJ2 Dataset via ``ij.py.to_java``."""
    if ij is None:
        return numpy_to_imageplus(array, title, pixel_size=pixel_size)
    return ij.py.to_java(np.asarray(array))


def imageplus_from(obj: Any, ij: Any = None):
    """An ImagePlus for ``obj``: an ImagePlus as it is, an ImageJ2 Dataset/ImgPlus (or a NumPy/xarray array)
    through PyImageJ's ``ij.py.to_imageplus`` when a gateway ``ij`` is given.

    Thin by design (needs Fiji/ImageJ2 + PyImageJ; not exercised by the tests): PyImageJ owns those
    conversions, including their axis and calibration handling.
    """
    if is_imageplus(obj):
        return obj
    if ij is None:
        if isinstance(obj, np.ndarray):
            return numpy_to_imageplus(obj)
        raise ValueError("image: not an ImagePlus; pass the PyImageJ gateway (ij=...) for ImageJ2 objects")
    return ij.py.to_imageplus(obj)


def imagej2_from(imp, ij: Any):
    """An ImageJ2 Dataset for the ImagePlus ``imp`` through PyImageJ's ``ij.py.to_dataset`` (thin, untested here)."""
    return ij.py.to_dataset(imp)
