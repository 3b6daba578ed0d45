"""Reading images with their calibration and writing ImageJ TIFFs atomically."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from fiji_bridge.io.atomic import atomic_path, check_outputs, reserve_space


def _um_per_unit(unit: str) -> float | None:
    """µm per calibration unit (`fiji_bridge.io.units.unit_to_um`, the table of the ImageJ front-end too: µm,
    nm, Å, mm, cm, m, ImageJ's escaped µm, ...); None for "pixel"; ValueError for a unit that is not a length."""
    from fiji_bridge.io.units import unit_to_um
    return unit_to_um(unit)


@dataclass
class ImageFile:
    """A 2-D image read from disk with its calibration.

    ``pixel_size`` is in µm, or None when the file carries no usable calibration. ``data`` is a
    `LazyImage` when read with ``lazy=True``.
    """

    data: np.ndarray | LazyImage
    pixel_size: float | None = None
    metadata: dict = field(default_factory=dict)
    #: Why the file's calibration cannot be used (non-square pixels, a unit that is not a length); then
    #: ``pixel_size`` is None and front-ends require an explicit pixel size (`fiji_bridge.pipeline.file_optics`).
    calibration_error: str | None = None


def _square(width: float, height: float, unit: str) -> float:
    """The pixel size of a square pixel; ValueError (the ImageJ front-end's message) otherwise."""
    if not np.isclose(width, height, rtol=1e-3):
        raise ValueError(f"calibration: pixels are not square ({width:g} x {height:g} {unit})")
    return width


def _pixel_size_from_resolution(page, unit: str | None) -> float | None:
    """Pixel size (µm) from the X/YResolution tags, in ImageJ's ``unit`` or the TIFF ResolutionUnit (cm);
    None when uncalibrated. ValueError for non-square pixels or a unit that is not a length."""
    sizes = []
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        if tag is None:
            continue
        num, den = tag.value
        if num <= 0 or den <= 0:
            return None
        sizes.append(den / num)                                # units per pixel
    if not sizes:
        return None
    res_unit = page.tags.get("ResolutionUnit")
    if unit:
        factor = _um_per_unit(unit)
    else:
        factor = 1e4 if res_unit is not None and int(res_unit.value) == 3 else None   # centimetre
    if factor is None:
        return None
    return _square(sizes[0], sizes[-1], unit or "cm") * factor


def check_input_file(path: Path) -> None:
    """An input must be an existing file (a folder gets its own message: folders are for `semiblind batch`)."""
    if path.is_dir():
        raise ValueError(f"input {path} is a folder, not an image file (for a folder use `semiblind batch`)")
    if not path.is_file():
        raise ValueError(f"input file not found: {path}")


def read_image(path: str | os.PathLike, lazy: bool = False) -> ImageFile:
    """Read a 2-D grayscale TIFF (8/16/32-bit) with ImageJ or OME calibration.

    Parameters
    ----------
    path : path
        TIFF file holding one 2-D plane.
    lazy : bool
        Return the pixels as a `LazyImage` (read on demand, band by band) instead of loading them, for
        images that need not fit in memory. Validation and calibration are the same.

    Raises ValueError with a one-line reason for unreadable files, RGB images and stacks.
    """
    path = Path(path)
    check_input_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            page = tif.pages[0]
            ij = tif.imagej_metadata or {}
            pixel_size, calibration_error = None, None
            try:
                if tif.is_ome and tif.ome_metadata:
                    pixel_size = _ome_pixel_size(tif.ome_metadata)
                if pixel_size is None:
                    pixel_size = _pixel_size_from_resolution(page, ij.get("unit"))
            except ValueError as exc:                      # unusable calibration: the caller decides
                calibration_error = str(exc)
            photometric = page.photometric
            data = None if lazy else series.asarray()
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise ValueError(f"cannot read {path} as a TIFF image: {exc}") from None
    if photometric == tifffile.PHOTOMETRIC.RGB or (len(shape) == 3 and shape[-1] in (3, 4)):
        raise ValueError(f"{path.name} is an RGB image; convert it to grayscale (ImageJ: Image > Type > 32-bit)")
    plane = tuple(n for n in shape if n != 1)
    if len(plane) < 2 and len(shape) >= 2:
        raise ValueError(f"{path.name} is a {'x'.join(map(str, shape[-2:]))}-pixel image: too small to deconvolve")
    if len(plane) != 2:
        raise ValueError(f"{path.name} has shape {shape}: only single 2-D planes are supported "
                         "(split stacks into planes first, e.g. `semiblind batch` on a folder of planes)")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise ValueError(f"{path.name} has unsupported pixel type {dtype}")
    meta = {k: v for k, v in ij.items() if isinstance(v, (str, int, float))}
    pixels = LazyImage(path) if lazy else np.squeeze(data)
    return ImageFile(data=pixels, pixel_size=pixel_size, metadata=meta, calibration_error=calibration_error)


def _ome_pixel_size(xml: str) -> float | None:
    """Pixel size (µm) from OME-XML PhysicalSizeX/Y and their units (default µm, as the OME schema says);
    None without PhysicalSizeX. ValueError for non-square pixels or a unit that is not a length."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
            sizes = []
            for axis in ("X", "Y"):
                if f"PhysicalSize{axis}" not in el.attrib:
                    continue
                value = float(el.attrib[f"PhysicalSize{axis}"])
                factor = _um_per_unit(el.attrib.get(f"PhysicalSize{axis}Unit", "µm"))
                if factor is None or not np.isfinite(value) or value <= 0:
                    return None
                sizes.append(value * factor)
            return _square(sizes[0], sizes[-1], "µm")
    return None


def write_imagej_tiff(path: str | os.PathLike, data: np.ndarray, pixel_size: float | None = None, *,
                      labels: list[str] | None = None, info: dict | None = None,
                      overwrite_guard: str | os.PathLike | None = None) -> Path:
    """Write a float32 ImageJ TIFF atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    path : path
        Destination.
    data : ndarray, shape (Y, X) or (N, Y, X)
        Image or stack; stacks get one slice per leading index.
    pixel_size : float, optional
        Pixel size in µm, written as ImageJ calibration (XResolution/YResolution, unit=micron).
    labels : list of str, optional
        ImageJ slice labels (one per slice).
    info : dict, optional
        JSON-serialisable metadata stored in ImageJ's "Info" property (Image > Show Info).
    overwrite_guard : path, optional
        Refuse to write when ``path`` is this file (never overwrite the input).
    """
    path = Path(path)
    if overwrite_guard is not None:
        check_outputs(overwrite_guard, output=path)
    data = np.ascontiguousarray(data, dtype=np.float32)
    meta, resolution = _imagej_metadata(pixel_size, info, labels, axes="ZYX" if data.ndim == 3 else None)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, resolution=resolution, metadata=meta)
    return path


def _imagej_metadata(pixel_size: float | None, info: dict | None = None, labels: list[str] | None = None,
                     axes: str | None = None) -> tuple[dict, tuple[float, float] | None]:
    """tifffile's ImageJ ``metadata`` and ``resolution`` for a calibrated float32 image with an Info property."""
    meta: dict = {"unit": "micron"} if pixel_size else {}
    if labels is not None:
        meta["Labels"] = list(labels)
    if info:
        meta["Info"] = json.dumps(info, indent=1, default=float)
    if axes is not None:
        meta["axes"] = axes
    return meta, ((1.0 / pixel_size, 1.0 / pixel_size) if pixel_size else None)


class MappedTiff:
    """A float32 ImageJ TIFF of ``shape`` created at ``path`` (uncompressed; its disk space reserved at once, so
    a full disk is an error now, not a SIGBUS later) and written band by band through short-lived memory maps
    (``out[rows] = band``, so mapped pages do not stay resident): the sink of out-of-core runs.
    ``path`` is usually the temporary of `fiji_bridge.io.atomic.atomic_path`."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], pixel_size: float | None = None, *,
                 info: dict | None = None):
        self.path, self.shape = Path(path), tuple(int(n) for n in shape)
        meta, resolution = _imagej_metadata(pixel_size, info)
        created = tifffile.memmap(self.path, shape=self.shape, dtype=np.float32, imagej=True,
                                  resolution=resolution, metadata=meta)
        del created
        reserve_space(self.path)

    def __setitem__(self, key, value) -> None:
        mapped = tifffile.memmap(self.path, mode="r+")
        mapped[key] = value
        mapped.flush()
        del mapped


def read_info(path: str | os.PathLike) -> dict:
    """The JSON metadata written by `write_imagej_tiff` into ImageJ's Info property."""
    with tifffile.TiffFile(path) as tif:
        info = (tif.imagej_metadata or {}).get("Info")
    return json.loads(info) if info else {}


class LazyImage:
    """A 2-D TIFF image read on demand, one slice at a time.

    Uncompressed contiguous files are memory-mapped anew for every read (so mapped pages are not
    kept in the process' resident memory); other files (tiled, compressed) go through tifffile's
    zarr store, which decodes only the strips or tiles a slice touches.

    Parameters
    ----------
    path : path
        TIFF file holding one 2-D plane.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                self.shape = tuple(int(n) for n in series.shape if n != 1)
                self.dtype = np.dtype(series.dtype)
                self.contiguous = bool(tif.pages[0].is_memmappable)       # uncompressed, contiguous, native order
                # strips past the end of the file: a truncated file (read on demand, so check it now)
                page = tif.pages[0]
                end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
                if end > tif.filehandle.size:
                    raise ValueError(f"the file is truncated ({tif.filehandle.size} of {end} bytes)")
        except (tifffile.TiffFileError, OSError, IndexError, ValueError) as exc:
            raise ValueError(f"cannot read {self.path} as a TIFF image: {exc}") from None
        if len(self.shape) != 2:
            raise ValueError(f"{self.path.name} has shape {self.shape}: only single 2-D planes can be tiled")
        self.ndim = 2

    def __getitem__(self, key) -> np.ndarray:
        if self.contiguous:
            mapped = tifffile.memmap(self.path, mode="r")
            try:
                return np.array(mapped.reshape(self.shape)[key])
            finally:
                del mapped
        try:
            import zarr
        except ImportError:
            raise ValueError(f"{self.path.name} is compressed or tiled: reading it in tiles needs zarr "
                             "(pip install 'semiblind[dask]'), or save it uncompressed") from None
        with tifffile.imread(self.path, aszarr=True) as store:
            return np.asarray(_zarr_slice(zarr.open(store, mode="r"), self.shape, key))


def _zarr_slice(array, shape: tuple[int, int], key) -> np.ndarray:
    """Slice a zarr array whose shape has singleton axes around the 2-D plane."""
    if tuple(array.shape) == shape:
        return array[key]
    index = tuple(0 if n == 1 else slice(None) for n in array.shape)
    plane_axes = [i for i, n in enumerate(array.shape) if n != 1]
    key = key if isinstance(key, tuple) else (key,)
    full = list(index)
    for axis, k in zip(plane_axes, key):
        full[axis] = k
    return array[tuple(full)]
