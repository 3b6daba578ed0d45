"""SemiBlind's result images in ImageJ: the restored image (`restored_to_imageplus`), the PSF parameter map
as a labelled stack (`parameter_map_to_imageplus`), the depth map (`depth_map_to_imageplus`) and a PSF-grid
montage (`psf_montage_to_imageplus`), titled with `result_title`."""
from __future__ import annotations


import numpy as np

from fiji_bridge.imagej._jvm import jclass
from fiji_bridge.imagej.convert import numpy_to_imageplus, set_pixel_size


# ------------------------------------------------------------------------------- result images


def _stem(title: str) -> str:
    title = str(title)
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpg", ".zip"):
        if title.lower().endswith(ext):
            return title[: -len(ext)]
    return title


def result_title(input_title: str, suffix: str) -> str:
    """Title of a result image: ``"cells.tif"`` + ``"restored"`` -> ``"cells_restored"``."""
    return f"{_stem(input_title)}_{suffix}"


def restored_to_imageplus(restored: np.ndarray, source, *, info: dict | None = None, axes: str | None = None,
                          title: str | None = None, offset: tuple[int, int] = (0, 0)):
    """The restored image or hyperstack as a 32-bit ImagePlus shaped like ``source``.

    Parameters
    ----------
    restored : ndarray
        float32 planes with axes ``axes`` (a subset of ``"TZCYX"`` in that order, `imageplus_axes`); default YX.
    source : ij.ImagePlus
        The input: its channels/slices/frames, calibration (pixel size, unit, z step, frame interval), slice
        labels (channel names) and, for a composite, its mode and channel colours are copied.
    info : dict, optional
        The Info property (what was used).
    title : str, optional
        Default ``<input>_restored``.
    offset : (x, y)
        Pixels from the input's corner to the restored region's (a selection): the calibration origin moves
        by as much, so µm coordinates match the input's.
    """
    axes = axes or "YX"
    imp = numpy_to_imageplus(np.asarray(restored, dtype=np.float32),
                             title or result_title(source.getTitle(), "restored"), axes=axes, info=info,
                             labels=_labels(source) if len(axes) > 2 else None)
    imp.setOpenAsHyperStack(bool(source.isHyperStack()) or imp.isHyperStack())
    cal = source.getCalibration().copy()
    cal.disableDensityCalibration()
    cal.xOrigin, cal.yOrigin = float(cal.xOrigin) - offset[0], float(cal.yOrigin) - offset[1]
    imp.setCalibration(cal)
    return _as_composite(imp, source) if source.isComposite() else imp


def _labels(source) -> list[str] | None:
    """Slice labels of ``source`` in stack order (channel names of hyperstacks); None when it has none."""
    stack = source.getStack()
    labels = [stack.getSliceLabel(k + 1) for k in range(int(stack.getSize()))]
    return None if all(label is None for label in labels) else ["" if v is None else str(v) for v in labels]


def _as_composite(imp, source):
    """``imp`` as a composite image with the mode and channel colours of the composite ``source``, each
    channel's display range reset to its own pixels."""
    comp = jclass("ij.CompositeImage")(imp, int(source.getMode()))
    luts = source.getLuts()
    for c in range(int(comp.getNChannels())):
        if c < len(luts):
            comp.setChannelLut(luts[c].clone(), c + 1)
    comp.setProperty("Info", imp.getProperty("Info"))
    comp.setCalibration(imp.getCalibration())
    comp.resetDisplayRanges()
    return comp


def _grid_calibration(imp, psf_map, offset: tuple[int, int] = (0, 0),
                      origin: tuple[float, float] = (0.0, 0.0)) -> None:
    """Calibrate a (my, mx) map so its pixels sit at the patch centres in the image's µm coordinates.

    ``offset`` (x, y, pixels) is where the deconvolved region (a selection) starts in the input image and
    ``origin`` (x, y, pixels) the input's own calibration origin, so map and input agree in µm.
    """
    stride = psf_map.spacing
    pixel = float(psf_map.optics.pixel_size)
    cy = np.asarray(psf_map.centres_y, dtype=float)
    cx = np.asarray(psf_map.centres_x, dtype=float)
    first_x = (cx[0] if cx.size else 0.0) + offset[0] - origin[0]
    first_y = (cy[0] if cy.size else 0.0) + offset[1] - origin[1]
    set_pixel_size(imp, stride * pixel, origin=(-first_x / stride, -first_y / stride))


def _fire():
    """ImageJ 1's built-in Fire colour table (`ij.plugin.LutLoader`)."""
    return jclass("ij.plugin.LutLoader").getLut("fire")


def _finite_range(plane: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values of ``plane`` (NaN = no data), widened when flat so ImageJ can show it."""
    finite = plane[np.isfinite(plane)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return lo, (hi if hi > lo else lo + 1.0)


def show_as_map(imp, data: np.ndarray, n_quantities: int):
    """The Fire LUT and each quantity's own display range, so that every slice of a map is readable when
    shown (one range for all would make the defocus slice black next to the depth in µm).

    ImageJ 1 keeps one display range per *channel*, so the quantities become the channels of a composite
    image in colour mode (planes of a stack's map along Z). ``data`` is (planes * quantities, my, mx) in stack
    order. Returns the image to show (a `CompositeImage`, or ``imp`` itself with one range when there are more
    quantities than ImageJ's channel limit).
    """
    CompositeImage = jclass("ij.CompositeImage")
    LUT = jclass("ij.process.LUT")
    planes = data.shape[0] // n_quantities
    ranges = [_finite_range(data[q::n_quantities]) for q in range(n_quantities)]
    if not 1 < n_quantities <= int(CompositeImage.MAX_CHANNELS):
        imp.setLut(LUT(_fire(), *ranges[0]))
        return imp
    imp.setDimensions(n_quantities, planes, 1)
    imp.setOpenAsHyperStack(True)
    comp = CompositeImage(imp, CompositeImage.COLOR)
    for q, (lo, hi) in enumerate(ranges):
        comp.setChannelLut(LUT(_fire(), lo, hi), q + 1)
    comp.setProperty("Info", imp.getProperty("Info"))
    comp.setCalibration(imp.getCalibration())
    comp.setPosition(1, 1, 1)
    comp.setDisplayRange(*ranges[0])
    return comp


def map_stack_to_imageplus(maps: dict, lead: str, title: str, *, offset: tuple[int, int] = (0, 0),
                           origin: tuple[float, float] = (0.0, 0.0)):
    """The PSF maps of the planes of an image as ImageJ's map window, in the map-file format of the command
    line (`fiji_bridge.stacks.map_stack`): the same slices, slice labels and Info keys, so that File > Save As
    Tiff writes a file that `fiji_bridge.io.map_file.load_psf_map` reads.

    Parameters
    ----------
    maps : dict
        `PSFMap` per plane index over the ``lead`` axes (one entry, key ``()``, for a 2-D image).
    lead : str
        The image's axes before YX (e.g. ``"TC"``; ``""`` for a 2-D image).
    title : str
        Window title.
    offset, origin : (x, y) pixels
        Start of the deconvolved region (selection) in the input, and the input's calibration origin.

    Returns
    -------
    ij.ImagePlus
        32-bit, calibrated on the patch grid (one pixel = ``stride`` image pixels, µm matching the input's),
        Fire LUT, a display range per quantity (see `show_as_map`).
    """
    from fiji_bridge.stacks import map_stack
    data, labels, meta, _ = map_stack(maps, lead)
    n_quantities = len(meta.get("labels") or labels)
    imp = numpy_to_imageplus(data, title, axes="ZYX" if data.ndim == 3 else "YX", labels=labels, info=meta)
    _grid_calibration(imp, next(iter(maps.values())), offset, origin)
    return show_as_map(imp, data.reshape(-1, *data.shape[-2:]), n_quantities)


def parameter_map_to_imageplus(psf_map, title: str):
    """One image's PSF map as ImageJ's map window (`map_stack_to_imageplus` of a 2-D image): slices are the
    parameters (waves RMS), ``confidence``, ``depth_um`` and, for models that predict them, σ and the
    out-of-range flags, as in the map file of ``semiblind deconvolve --map``."""
    return map_stack_to_imageplus({(): psf_map}, "", title)


def depth_map_to_imageplus(psf_map, title: str, *, offset: tuple[int, int] = (0, 0),
                           origin: tuple[float, float] = (0.0, 0.0)):
    """The axial-distance map (µm, from `PSFMap.depth_um`) as a 32-bit image on the patch grid, Fire LUT."""
    return depth_stack_to_imageplus({(): psf_map}, "", title, offset=offset, origin=origin)


def depth_stack_to_imageplus(maps: dict, lead: str, title: str, *, offset: tuple[int, int] = (0, 0),
                             origin: tuple[float, float] = (0.0, 0.0)):
    """The depth maps (µm) of the planes of an image with the image's leading axes ``lead`` (a hyperstack for a
    hyperstack), on the patch grid, Fire LUT with one range for all planes (depths compare across planes)."""
    first = next(iter(maps.values()))
    depth = np.stack([np.asarray(m.depth_um(), np.float32) for m in maps.values()])
    shape = tuple(int(v) + 1 for v in np.max(np.array(list(maps), dtype=int).reshape(len(maps), -1), axis=0)) \
        if lead else ()
    imp = numpy_to_imageplus(depth.reshape(*shape, *depth.shape[-2:]), title, axes=lead + "YX",
                             info=_map_info(first))
    _grid_calibration(imp, first, offset, origin)
    set_pixel_size(imp, None, value_unit="µm")
    imp.setLut(jclass("ij.process.LUT")(_fire(), *_finite_range(depth)))
    return imp


def _map_info(psf_map) -> dict:
    return {
        "semiblind": "psf_map", "names": list(psf_map.names), "units": list(psf_map.units),
        "patch_size": int(psf_map.patch_size), "stride": int(psf_map.stride),
        "optics": psf_map.optics.to_dict(),
        "centres_y": [float(v) for v in np.asarray(psf_map.centres_y)],
        "centres_x": [float(v) for v in np.asarray(psf_map.centres_x)],
    }


def psf_montage_to_imageplus(psfs: np.ndarray, pixel_size: float, title: str):
    """The PSF grid used for a deconvolution (``Deconvolution.psfs``) as one montage image, each PSF scaled to
    its maximum, calibrated with the image pixel size."""
    from fiji_bridge.io.report import psf_montage
    return numpy_to_imageplus(psf_montage(np.asarray(psfs), gap=0), title, pixel_size=float(pixel_size))
