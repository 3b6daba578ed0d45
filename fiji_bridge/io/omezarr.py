"""OME-Zarr (NGFF v0.4, read also v0.5) images: the full-resolution level read plane by plane and written
plane by plane, so large datasets need no TIFF conversion.

Only what SemiBlind needs is read: the axes (t, c, z, y, x in any NGFF order), the scale of the first
dataset (level 0 of a multi-resolution pyramid; times the multiscale's own scale, if any: pixel size, z step,
time interval, in the axes' units) and the ``omero`` channel labels. Outputs are Zarr v2 (NGFF 0.4) images with
one chunk per YX plane, one level or, with ``levels``, a pyramid of 2x2-binned levels, written through a
temporary folder renamed onto the destination at the end (`fiji_bridge.io.atomic.atomic_dir`: nothing
half-written is left).

Several images in one container — an HCS plate (``plate`` → wells → fields), a bioformats2raw series
layout, or a group whose child groups are images — are positions: `image_paths` lists them and
`write_layout` copies the container's groups so that the outputs keep the input's structure. Needs the
``zarr`` package (``semiblind[dask]``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fiji_bridge.io.atomic import atomic_dir
from fiji_bridge.io.units import unit_to_um

_TIME = {"second": 1.0, "s": 1.0, "millisecond": 1e-3, "ms": 1e-3, "minute": 60.0, "hour": 3600.0}


def is_omezarr(path: str | os.PathLike) -> bool:
    """A folder holding a Zarr group (``.zattrs``/``.zgroup`` or ``zarr.json``), or any ``*.zarr`` path."""
    p = Path(path)
    return str(p).rstrip("/").lower().endswith(".zarr") or (p.is_dir() and any(
        (p / name).is_file() for name in (".zattrs", ".zgroup", "zarr.json")))


def _scale(node: dict, ndim: int) -> list[float]:
    """The ``scale`` transformation of a dataset or multiscale entry (ones when it has none)."""
    found = next((t["scale"] for t in node.get("coordinateTransformations") or [] if t.get("type") == "scale"),
                 None)
    return [float(v) for v in found] if found is not None and len(found) == ndim else [1.0] * ndim


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
        dataset = ms["datasets"][0]                       # level 0: the full resolution
        array = group[dataset["path"]]
        shape, dtype = tuple(int(n) for n in array.shape), np.dtype(array.dtype)
        scale = np.multiply(_scale(dataset, len(names)), _scale(ms, len(names))).tolist()
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
    pixel_size, pixel_y, calibration_error = length("X"), length("Y"), None
    if pixel_size is not None and pixel_y is not None and not np.isclose(pixel_size, pixel_y, rtol=1e-3):
        calibration_error = f"calibration: pixels are not square ({pixel_size:g} x {pixel_y:g} µm)"
        pixel_size = None
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
                  info: dict | None = None, levels: int = 1) -> Path:
    """Write float32 planes (file order of ``axes``) as an OME-Zarr image (NGFF 0.4, Zarr v2), atomically.

    Parameters
    ----------
    path : path
        Destination folder (``NAME.zarr``); an existing OME-Zarr there is replaced, anything else refused.
    planes : iterable of ndarray
        The YX planes in C order over the leading axes; one is in memory at a time.
    shape, axes : tuple of int, str
        Shape and axes (e.g. ``"TCYX"``) of the image.
    pixel_size, z_spacing : float, optional
        µm; written as the ``scale`` of Y/X and Z with unit ``micrometer``.
    time_interval : float, optional
        s between frames.
    channel_names : list of str, optional
        ``omero`` channel labels.
    info : dict, optional
        Stored as the ``semiblind`` attribute (`read_omezarr_info`).
    levels : int
        Resolution levels: 1 (default) writes the full resolution only; each further level bins the one
        before 2x2 in YX (mean; an odd last row or column is dropped), scale doubled and translated by half
        the binned pixels, as NGFF asks, so every level lies on the same physical grid.

    Raises
    ------
    ValueError
        Bad ``levels``, a missing output folder, or ``path`` exists and is not an OME-Zarr image.
    """
    zarr = _zarr()
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    levels = check_levels(levels, shape[-2:])
    if path.exists() and not is_omezarr(path):
        raise ValueError(f"output {path} exists and is not an OME-Zarr image; give a new name")
    with atomic_dir(path) as tmp:
        group = _new_group(zarr, tmp)
        create = getattr(group, "create_array", None) or group.create_dataset     # zarr 3 / zarr 2
        lead = shape[:-2]
        arrays = []
        for k in range(levels):
            yx = _level_shape(shape[-2:], k)
            arrays.append(create(str(k), shape=lead + yx, chunks=(1,) * len(lead) + yx, dtype="float32"))
        count = 0
        for index, plane in zip(np.ndindex(*lead) if lead else [()], planes):
            level = np.asarray(plane, np.float32).reshape(shape[-2:])
            for k, array in enumerate(arrays):
                if k:
                    level = _bin2(level)
                array[index] = level
            count += 1
        if count != int(np.prod(lead, dtype=np.int64)):
            raise ValueError(f"write_omezarr: got {count} planes for {int(np.prod(lead))}")
        group.attrs["multiscales"] = [_multiscale(path.stem, axes, levels, pixel_size, z_spacing, time_interval)]
        if channel_names and "C" in axes:
            group.attrs["omero"] = {"channels": [{"label": str(n), "active": True} for n in channel_names]}
        group.attrs["semiblind"] = json.loads(json.dumps(info or {}, default=float))
    return path


#: Most resolution levels an output pyramid may have.
MAX_LEVELS = 16


def check_levels(levels, plane_shape: tuple[int, ...]) -> int:
    """``levels`` as an int after checking it (1 to `MAX_LEVELS`, each level at least 1 pixel a side).

    Raises
    ------
    ValueError
        One line naming ``pyramid`` (the option that sets it).
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"pyramid must be a whole number of levels from 1 to {MAX_LEVELS}, got {levels!r}")
    side = min(int(n) for n in plane_shape)
    if side >> (int(levels) - 1) < 1:
        raise ValueError(f"pyramid: {levels} levels need planes of at least {2 ** (int(levels) - 1)} pixels a side; "
                         f"these have {side}")
    return int(levels)


def _level_shape(yx: tuple[int, ...], k: int) -> tuple[int, int]:
    return int(yx[0]) >> k, int(yx[1]) >> k


def _bin2(plane: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks (an odd last row / column dropped)."""
    h, w = plane.shape[0] // 2, plane.shape[1] // 2
    return plane[:2 * h, :2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3), dtype=np.float32)


def _multiscale(name: str, axes: str, levels: int, pixel_size: float | None, z_spacing: float | None,
                time_interval: float | None) -> dict:
    """The NGFF 0.4 ``multiscales`` entry of an image written by `write_omezarr`."""
    kinds = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
    base = {"T": time_interval or 1.0, "C": 1.0, "Z": z_spacing or 1.0, "Y": pixel_size or 1.0,
            "X": pixel_size or 1.0}
    ax = []
    for a in axes:
        entry = {"name": a.lower(), "type": kinds[a]}
        if a in "ZYX" and (pixel_size if a in "YX" else z_spacing):
            entry["unit"] = "micrometer"
        if a == "T" and time_interval:
            entry["unit"] = "second"
        ax.append(entry)
    datasets = []
    for k in range(levels):
        factor = [2.0 ** k if a in "YX" else 1.0 for a in axes]
        transforms: list[dict] = [{"type": "scale", "scale": [base[a] * f for a, f in zip(axes, factor)]}]
        if k:                      # a binned pixel's centre lies half a binned pixel in from the first pixel's
            transforms.append({"type": "translation",
                               "translation": [base[a] * (f - 1) / 2 for a, f in zip(axes, factor)]})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    return {"version": "0.4", "name": name, "axes": ax, "datasets": datasets}


def _new_group(zarr, path: Path):
    """A new, empty Zarr v2 group at ``path`` (zarr 3 and zarr 2)."""
    try:
        return zarr.open_group(str(path), mode="w", zarr_format=2)
    except TypeError:                                  # zarr 2: always the v2 format
        return zarr.open_group(str(path), mode="w")


# ---------------------------------------------------------------------------------------------- positions

#: Attributes of an image group that describe its pixels (not copied into the layout of the outputs).
_IMAGE_KEYS = ("multiscales", "omero", "semiblind", "image-label")


def _attrs(zarr, path: Path) -> dict:
    """A group's attributes with NGFF 0.5's ``ome`` nesting removed ({} when ``path`` is no group)."""
    try:
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    except (KeyError, ValueError, TypeError, OSError, FileNotFoundError):
        return {}
    return {**{k: v for k, v in attrs.items() if k != "ome"}, **(attrs.get("ome") or {})}


def image_paths(path: str | os.PathLike) -> list[str]:
    """The images (positions) of an OME-Zarr, as paths relative to it: ``[""]`` for a single image.

    A plate lists its wells' fields (``A/1/0``, ...), a bioformats2raw layout its series (``0``, ``1``, ...),
    any other group the child groups (to two levels down) that are images.

    Raises
    ------
    ValueError
        One line when ``path`` holds no OME-Zarr image.
    """
    zarr = _zarr()
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"input file not found: {path}" if not path.exists() else
                         f"{path.name} is not an OME-Zarr folder")
    attrs = _attrs(zarr, path)
    if "multiscales" in attrs:
        return [""]
    if isinstance(attrs.get("plate"), dict):
        found = []
        for well in attrs["plate"].get("wells") or []:
            well_path = str(well.get("path", "")) if isinstance(well, dict) else ""
            fields = (_attrs(zarr, path / well_path).get("well") or {}).get("images") or []
            found += [f"{well_path}/{f['path']}" for f in fields if isinstance(f, dict) and "path" in f]
    else:
        found = _child_images(zarr, path, depth=2)
    found = [p for p in found if "multiscales" in _attrs(zarr, path / p)]
    if not found:
        raise ValueError(f"{path.name} holds no OME-Zarr image (no multiscales, plate wells or image groups)")
    return found


def _child_images(zarr, path: Path, depth: int, prefix: str = "") -> list[str]:
    """Child groups of ``path`` that are images, looking ``depth`` levels down (numeric names in order)."""
    found = []
    children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")),
                      key=lambda c: (not c.name.isdigit(), int(c.name) if c.name.isdigit() else 0, c.name))
    for child in children:
        attrs = _attrs(zarr, child)
        if "multiscales" in attrs:
            found.append(prefix + child.name)
        elif depth > 1:
            found += _child_images(zarr, child, depth - 1, prefix + child.name + "/")
    return found


def write_layout(src: str | os.PathLike, dst: str | os.PathLike, images: list[str]) -> None:
    """Create in ``dst`` the groups that hold ``images`` in ``src`` (root, plate rows, wells, ...) with their
    attributes (``plate``, ``well``, ``bioformats2raw.layout``, ...; NGFF 0.5's written as 0.4), so that the
    images written at the same relative paths keep the input's structure."""
    zarr = _zarr()
    src, dst = Path(src), Path(dst)
    groups = sorted({""} | {q.as_posix() for p in images for q in Path(p).parents if q.as_posix() != "."})
    for rel in groups:                                 # parents before children
        group = _new_group(zarr, dst / rel if rel else dst)
        attrs = {k: v for k, v in _attrs(zarr, src / rel if rel else src).items() if k not in _IMAGE_KEYS}
        if attrs:
            group.attrs.update(json.loads(json.dumps(_as_v04(attrs))))


def _as_v04(value):
    """NGFF metadata with every ``version`` set to 0.4 (the format of the outputs)."""
    if isinstance(value, dict):
        return {k: ("0.4" if k == "version" else _as_v04(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_v04(v) for v in value]
    return value


def read_omezarr_info(path: str | os.PathLike) -> dict:
    """The ``semiblind`` metadata `write_omezarr` stored."""
    zarr = _zarr()
    return dict(zarr.open_group(str(path), mode="r").attrs.asdict().get("semiblind") or {})
