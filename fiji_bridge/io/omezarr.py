"""OME-Zarr (NGFF v0.4, read also v0.5) images: the full-resolution level read plane by plane and written
plane by plane, so large datasets need no TIFF conversion.

Only what SemiBlind needs is read: the axes (t, c, z, y, x in any NGFF order), the scale of the first
dataset (pixel size, z step, time interval, in the axes' units) and the ``omero`` channel labels. Outputs
are one-level images (no pyramid) in Zarr v2 format with one chunk per YX plane, written to a temporary
folder next to the destination and renamed onto it at the end (nothing half-written is left). Needs the
``zarr`` package (``semiblind[dask]``).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fiji_bridge.io.units import unit_to_um

_TIME = {"second": 1.0, "s": 1.0, "millisecond": 1e-3, "ms": 1e-3, "minute": 60.0, "hour": 3600.0}


def is_omezarr(path: str | os.PathLike) -> bool:
    """A folder holding a Zarr group (``.zattrs``/``.zgroup`` or ``zarr.json``), or any ``*.zarr`` path."""
    p = Path(path)
    return str(p).rstrip("/").lower().endswith(".zarr") or (p.is_dir() and any(
        (p / name).is_file() for name in (".zattrs", ".zgroup", "zarr.json")))


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ValueError("OME-Zarr needs the zarr package (pip install 'semiblind[dask]')") from None
    return zarr


def open_omezarr(path: str | os.PathLike):
    """A `fiji_bridge.io.stacks.Stack` of an OME-Zarr image's full-resolution level (pixels left on disk)."""
    from fiji_bridge.io.ome import FileOptics
    from fiji_bridge.io.stacks import Stack, _normalise_axes
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"input file not found: {path}" if not path.exists() else
                         f"{path.name} is not an OME-Zarr folder")
    zarr = _zarr()
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs.asdict()
        attrs = attrs.get("ome", attrs)                    # NGFF 0.5 nests its metadata under "ome"
        ms = attrs["multiscales"][0]
        names = [a["name"] if isinstance(a, dict) else str(a) for a in ms["axes"]]
        units = [a.get("unit") if isinstance(a, dict) else None for a in ms["axes"]]
        dataset = ms["datasets"][0]
        array = group[dataset["path"]]
        shape, dtype = tuple(int(n) for n in array.shape), np.dtype(array.dtype)
        scale = next((t["scale"] for t in dataset.get("coordinateTransformations", []) if t.get("type") == "scale"),
                     [1.0] * len(names))
    except (KeyError, IndexError, TypeError, ValueError, OSError) as exc:
        raise ValueError(f"{path.name} is not a readable OME-Zarr image ({' '.join(str(exc).split())})") from None
    axes = "".join(n.upper() for n in names)
    keep = [i for i, a in enumerate(axes) if not (a in "TZC" and shape[i] == 1)]    # singleton T/Z/C dropped
    full_axes, full_shape = axes, shape
    if not {"Y", "X"} <= set(full_axes):
        raise ValueError(f"{path.name} has axes {axes!r}: no Y and X")
    kept = "".join(axes[i] for i in keep if axes[i] not in "YX") + "YX"
    axes = _normalise_axes(kept, tuple(full_shape[full_axes.index(a)] for a in kept), path.name)
    optics = FileOptics()

    def length(axis: str) -> float | None:
        if axis not in full_axes:
            return None
        i = full_axes.index(axis)
        try:
            factor = unit_to_um(units[i] or "micrometer")
        except ValueError:
            return None
        return None if factor is None else float(scale[i]) * factor
    pixel_size, calibration_error = length("X"), None
    if pixel_size is not None and length("Y") is not None and not np.isclose(pixel_size, length("Y"), rtol=1e-3):
        pixel_size, calibration_error = None, (f"calibration: pixels are not square ({length('X'):g} x "
                                               f"{length('Y'):g} µm)")
    optics.pixel_size = pixel_size
    if pixel_size is not None:
        optics.sources["pixel_size"] = "OME-Zarr scale"
    optics.z_spacing = length("Z") if "Z" in axes else None
    if "T" in axes:
        i = full_axes.index("T")
        optics.time_interval = float(scale[i]) * _TIME.get(str(units[i] or "second").lower(), 1.0)
    channels = (attrs.get("omero") or {}).get("channels") or []
    optics.channel_names = [str(c.get("label", "")) for c in channels if isinstance(c, dict)]
    sb = attrs.get("semiblind")
    if isinstance(sb, dict) and sb.get("wavelengths"):
        optics.wavelengths = [float(w) for w in sb["wavelengths"]]
        optics.sources["wavelength"] = "OME-Zarr semiblind metadata"
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise ValueError(f"{path.name} has unsupported pixel type {dtype}")

    def read(index: tuple[int, ...]) -> np.ndarray:
        key: list = [0] * len(full_shape)
        for a, v in zip(axes[:-2], index):
            key[full_axes.index(a)] = int(v)
        key[full_axes.index("Y")] = slice(None)
        key[full_axes.index("X")] = slice(None)
        arr = zarr.open_group(str(path), mode="r")[dataset["path"]]
        plane = np.asarray(arr[tuple(key)])
        return plane if full_axes.index("Y") < full_axes.index("X") else plane.T
    return Stack(path=path, axes=axes, shape=tuple(full_shape[full_axes.index(a)] for a in axes), dtype=dtype,
                 kind="zarr", pixel_size=pixel_size, calibration_error=calibration_error, optics=optics,
                 metadata={}, _reader=read)


def write_omezarr(path: str | os.PathLike, planes: Iterable[np.ndarray], shape: tuple[int, ...], axes: str, *,
                  pixel_size: float | None = None, z_spacing: float | None = None,
                  time_interval: float | None = None, channel_names: list[str] | None = None,
                  info: dict | None = None) -> Path:
    """Write float32 planes (file order of ``axes``) as a one-level OME-Zarr image (NGFF 0.4, Zarr v2),
    through a temporary folder renamed onto ``path`` at the end (an existing OME-Zarr there is replaced)."""
    zarr = _zarr()
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"output folder does not exist: {path.parent}")
    if path.exists() and not is_omezarr(path):
        raise ValueError(f"output {path} exists and is not an OME-Zarr image; give a new name")
    tmp = path.parent / f".{path.name}.semiblind-partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        except TypeError:                                  # zarr 2: always the v2 format
            group = zarr.open_group(str(tmp), mode="w")
        shape = tuple(int(n) for n in shape)
        create = getattr(group, "create_array", None) or group.create_dataset     # zarr 3 / zarr 2
        array = create("0", shape=shape, chunks=(1,) * (len(shape) - 2) + shape[-2:], dtype="float32")
        lead = shape[:-2]
        count = 0
        for index, plane in zip(np.ndindex(*lead) if lead else [()], planes):
            array[index] = np.asarray(plane, np.float32).reshape(shape[-2:])
            count += 1
        if count != int(np.prod(lead, dtype=np.int64)):
            raise ValueError(f"write_omezarr: got {count} planes for {int(np.prod(lead))}")
        kinds = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
        scale = {"T": time_interval or 1.0, "C": 1.0, "Z": z_spacing or 1.0, "Y": pixel_size or 1.0,
                 "X": pixel_size or 1.0}
        ax = []
        for a in axes:
            entry = {"name": a.lower(), "type": kinds[a]}
            if a in "ZYX" and (pixel_size if a in "YX" else z_spacing):
                entry["unit"] = "micrometer"
            if a == "T" and time_interval:
                entry["unit"] = "second"
            ax.append(entry)
        group.attrs["multiscales"] = [{"version": "0.4", "name": path.stem, "axes": ax, "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [scale[a] for a in axes]}]}]}]
        if channel_names and "C" in axes:
            group.attrs["omero"] = {"channels": [{"label": str(n), "active": True} for n in channel_names]}
        group.attrs["semiblind"] = json.loads(json.dumps(info or {}, default=float))
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.semiblind-old-{os.getpid()}"
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_omezarr_info(path: str | os.PathLike) -> dict:
    """The ``semiblind`` metadata `write_omezarr` stored."""
    zarr = _zarr()
    return dict(zarr.open_group(str(path), mode="r").attrs.asdict().get("semiblind") or {})
