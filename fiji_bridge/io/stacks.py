"""Stacks: TIFF, OME-TIFF and ImageJ hyperstacks with any of T, Z, C around YX, read and written one plane
at a time.

`open_stack` reads a file's axes, calibration (pixel size, z step, time interval), channel names and the
optics its metadata holds (`fiji_bridge.io.ome`) without loading pixels; `Stack.plane` reads one YX plane.
`write_stack` writes planes from an iterator (one in memory at a time) as an ImageJ hyperstack or an
OME-TIFF, atomically, keeping the axes and that metadata.

A 2-D image is a stack without leading axes. The planes of a plain multi-page TIFF (no ImageJ or OME
axes) are read as Z.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from fiji_bridge.io.atomic import atomic_path, check_outputs
from fiji_bridge.io.ome import FileOptics, parse_imagej_info, parse_ome

#: Leading axes SemiBlind understands, in ImageJ's hyperstack order.
LEAD_AXES = "TZC"
#: tifffile's generic axes of plain multi-page files, read as Z.
_GENERIC = "IQ"


@dataclass
class Stack:
    """A stack on disk: ``axes`` is the leading axes (a subset of T, Z, C in the file's order) + "YX"."""

    path: Path
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str                                   # 'ome', 'imagej', 'tiff' or 'zarr' (OME-Zarr)
    pixel_size: float | None = None             # µm, None: uncalibrated
    calibration_error: str | None = None
    optics: FileOptics = field(default_factory=FileOptics)
    metadata: dict = field(default_factory=dict)   # ImageJ scalar metadata (input_metadata of the outputs)
    _memmap: tuple | None = None                # (offset, byte order) of an uncompressed contiguous series
    _reader: Callable[[tuple[int, ...]], np.ndarray] | None = None   # planes of other formats (OME-Zarr)

    @property
    def lead_axes(self) -> str:
        return self.axes[:-2]

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[:-2])

    @property
    def plane_shape(self) -> tuple[int, int]:
        return tuple(self.shape[-2:])

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.lead_shape, dtype=np.int64))

    def size(self, axis: str) -> int:
        return self.shape[self.axes.index(axis)] if axis in self.lead_axes else 1

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Plane indices over the leading axes, in file order (C order)."""
        return iter(np.ndindex(*self.lead_shape)) if self.lead_shape else iter([()])

    def coordinate(self, index: tuple[int, ...], axis: str) -> int:
        """Position of plane ``index`` along ``axis`` (0 when the stack has no such axis)."""
        return int(index[self.lead_axes.index(axis)]) if axis in self.lead_axes else 0

    def plane(self, index: tuple[int, ...]) -> np.ndarray:
        """One YX plane (a copy in its file dtype), read alone from the file."""
        if self._reader is not None:
            return self._reader(tuple(index))
        k = int(np.ravel_multi_index(index, self.lead_shape)) if self.lead_shape else 0
        if self._memmap is not None:
            offset, order = self._memmap
            mapped = np.memmap(self.path, dtype=self.dtype.newbyteorder(order), mode="r", shape=self.shape,
                               offset=offset)
            try:
                return np.array(mapped.reshape(-1, *self.plane_shape)[k], dtype=self.dtype)
            finally:
                del mapped
        with tifffile.TiffFile(self.path) as tif:
            return np.asarray(tif.asarray(key=k, series=0)).reshape(self.plane_shape)


def _normalise_axes(axes: str, shape: tuple[int, ...], name: str) -> str:
    axes = "".join("Z" if a in _GENERIC else a for a in axes)
    if not axes.endswith("YX") or len(axes) != len(shape):
        raise ValueError(f"{name} has axes {axes!r}: only Y, X and T, Z, C planes are supported")
    extra = [a for a in axes[:-2] if a not in LEAD_AXES]
    if "S" in axes or extra:
        what = "an RGB image; convert it to grayscale (ImageJ: Image > Type > 32-bit)" if "S" in axes else \
            f"an axis {extra[0]!r} that is not T, Z or C"
        raise ValueError(f"{name} has {what}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name} has repeated axes {axes!r}")
    return axes


def open_stack(path: str | os.PathLike) -> Stack:
    """A TIFF / OME-TIFF / ImageJ hyperstack's axes and metadata, pixels left on disk.

    Raises ValueError with a one-line reason for missing or unreadable files, RGB images, axes other than
    T, Z, C, Y, X, planes smaller than 2x2 and unsupported pixel types.
    """
    from fiji_bridge.io.tiff import _ome_pixel_size, _pixel_size_from_resolution, check_input_file
    path = Path(path)
    from fiji_bridge.io.omezarr import is_omezarr, open_omezarr
    if is_omezarr(path):
        return open_omezarr(path)
    check_input_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype, axes = tuple(int(n) for n in series.shape), np.dtype(series.dtype), series.axes
            page = tif.pages[0]
            ij = tif.imagej_metadata or {}
            kind = "ome" if tif.is_ome and tif.ome_metadata else ("imagej" if tif.is_imagej else "tiff")
            optics = parse_ome(tif.ome_metadata) if kind == "ome" else parse_imagej_info(ij.get("Info"))
            pixel_size, calibration_error = None, None
            try:
                if kind == "ome":
                    pixel_size = _ome_pixel_size(tif.ome_metadata)
                if pixel_size is None:
                    pixel_size = _pixel_size_from_resolution(page, ij.get("unit"))
            except ValueError as exc:
                calibration_error = str(exc)
            offset = series.dataoffset
            order = tif.byteorder
            photometric = page.photometric
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"cannot read {path} as a TIFF image: {' '.join(str(exc).split())}") from None
    if photometric == tifffile.PHOTOMETRIC.RGB:
        raise ValueError(f"{path.name} is an RGB image; convert it to grayscale (ImageJ: Image > Type > 32-bit)")
    axes = _normalise_axes(axes, shape, path.name)
    if min(shape[-2:]) < 2:
        raise ValueError(f"{path.name} has {shape[-2]}x{shape[-1]}-pixel planes: too small to deconvolve")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise ValueError(f"{path.name} has unsupported pixel type {dtype}")
    if kind != "ome":
        optics.z_spacing = _positive(ij.get("spacing")) if "Z" in axes else None
        optics.time_interval = _positive(ij.get("finterval")) if "T" in axes else None
        labels = ij.get("Labels")
        if not optics.channel_names and "C" in axes and isinstance(labels, list):
            n_c = shape[axes.index("C")]
            step = int(np.prod([shape[i] for i, a in enumerate(axes[:-2]) if axes.index("C") < i], dtype=int))
            optics.channel_names = [str(labels[c * step]) if c * step < len(labels) else "" for c in range(n_c)]
    if pixel_size is not None:
        optics.pixel_size = pixel_size
    meta = {k: v for k, v in ij.items() if isinstance(v, (str, int, float)) and k != "Info"}
    return Stack(path=path, axes=axes, shape=shape, dtype=dtype, kind=kind, pixel_size=pixel_size,
                 calibration_error=calibration_error, optics=optics, metadata=meta,
                 _memmap=None if offset is None else (int(offset), order))


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def write_stack(path: str | os.PathLike, planes: Iterable[np.ndarray], shape: tuple[int, ...], axes: str, *,
                kind: str = "imagej", pixel_size: float | None = None, z_spacing: float | None = None,
                time_interval: float | None = None, channel_names: list[str] | None = None,
                wavelengths: list[float | None] | None = None, labels: list[str] | None = None,
                info: dict | None = None, overwrite_guard: str | os.PathLike | None = None) -> Path:
    """Write float32 planes from an iterator (file order of ``axes``) as one stack, atomically.

    ``kind`` 'ome' writes an OME-TIFF with PhysicalSize X/Y/Z, TimeIncrement, channel names and emission
    wavelengths (nm) and ``info`` as JSON in a MapAnnotation ``semiblind`` and the Image Description;
    otherwise an ImageJ hyperstack (axes in ImageJ's TZCYX order) with the calibration, z spacing, frame
    interval, slice labels and ``info`` as JSON in its Info property. Only one plane is in memory at a time.
    """
    path = Path(path)
    if overwrite_guard is not None:
        check_outputs(overwrite_guard, output=path)
    shape = tuple(int(n) for n in shape)

    def as_float32() -> Iterator[np.ndarray]:
        count = 0
        for plane in planes:
            count += 1
            yield np.ascontiguousarray(plane, dtype=np.float32).reshape(shape[-2:])
        expected = int(np.prod(shape[:-2], dtype=np.int64))
        if count != expected:
            raise ValueError(f"write_stack: got {count} planes for {expected}")

    text = json.dumps(info or {}, indent=1, default=float)
    with atomic_path(path) as tmp:
        if kind == "ome":
            meta: dict = {"axes": axes, "Description": text, "MapAnnotation": {"semiblind": text}}
            if pixel_size:
                meta.update(PhysicalSizeX=pixel_size, PhysicalSizeXUnit="µm", PhysicalSizeY=pixel_size,
                            PhysicalSizeYUnit="µm")
            if z_spacing and "Z" in axes:
                meta.update(PhysicalSizeZ=z_spacing, PhysicalSizeZUnit="µm")
            if time_interval and "T" in axes:
                meta.update(TimeIncrement=time_interval, TimeIncrementUnit="s")
            n_c = shape[axes.index("C")] if "C" in axes else 1
            channel: dict = {}
            if channel_names and any(channel_names):
                channel["Name"] = [str(s) for s in channel_names][:n_c]
            if wavelengths and all(w is not None for w in wavelengths) and len(wavelengths) == n_c:
                channel.update(EmissionWavelength=[round(w * 1000, 3) for w in wavelengths],
                               EmissionWavelengthUnit=["nm"] * n_c)
            if channel:
                meta["Channel"] = channel
            tifffile.imwrite(tmp, as_float32(), shape=shape, dtype="float32", ome=True, metadata=meta,
                             photometric="minisblack")
        else:
            order = [axes.index(a) for a in LEAD_AXES if a in axes[:-2]]
            if order != sorted(order):
                raise ValueError(f"write_stack: ImageJ hyperstacks need axes in TZC order, got {axes!r}")
            ij: dict = {"axes": axes, "Info": text}
            if pixel_size:
                ij["unit"] = "micron"
            if z_spacing and "Z" in axes:
                ij["spacing"] = z_spacing
            if time_interval and "T" in axes:
                ij["finterval"] = time_interval
            if labels is not None:
                ij["Labels"] = list(labels)
            tifffile.imwrite(tmp, as_float32(), shape=shape, dtype="float32", imagej=True, metadata=ij,
                             resolution=(1.0 / pixel_size, 1.0 / pixel_size) if pixel_size else None,
                             photometric="minisblack")
    return path


def imagej_axes(axes: str) -> tuple[str, list[int]]:
    """ImageJ's order of ``axes`` (TZC then YX) and the permutation from ``axes`` to it."""
    lead = [a for a in LEAD_AXES if a in axes[:-2]]
    return "".join(lead) + "YX", [axes.index(a) for a in lead] + [len(axes) - 2, len(axes) - 1]


def read_stack_info(path: str | os.PathLike) -> dict:
    """The JSON metadata `write_stack` stored (ImageJ Info or the OME MapAnnotation ``semiblind``; the
    ``semiblind`` attributes of an OME-Zarr image)."""
    from fiji_bridge.io.omezarr import is_omezarr, read_omezarr_info
    if is_omezarr(path):
        return read_omezarr_info(path)
    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            import xml.etree.ElementTree as ET
            for el in ET.fromstring(tif.ome_metadata).iter():
                if el.tag.endswith("}M") and el.get("K") == "semiblind":
                    return json.loads(el.text or "{}")
            return {}
        text = (tif.imagej_metadata or {}).get("Info")
    return json.loads(text) if text else {}
