"""SemiBlind results as napari layer data, and the PSF-map file as layers (reader / writer / sample data).

Everything here is plain data (``(data, kwargs, layer_type)`` tuples, napari's LayerData), so it is tested
without a viewer. Layers keep the input's world coordinates: the restored image has the input layer's
``scale`` and ``translate``; a map pixel sits on its patch centre, ``stride`` image pixels apart.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..estimation.psf_map import PSFMap
from ..io.map_file import load_psf_map, read_map_file  # noqa: F401 - the napari-free loader, re-exported

#: Colormaps per map slice (matplotlib names napari knows); others get 'gray'.
COLORMAPS = {"defocus": "magma", "astigmatism_0": "PiYG", "astigmatism_45": "PiYG", "depth_um": "viridis",
             "confidence": "gray", "defocus_sigma": "inferno"}
#: Metadata key under which map layers carry what is needed to write them back as a map file.
MAP_KEY = "semiblind_map"

LayerData = tuple


def _spacing(centres: np.ndarray) -> float:
    """Map pixel pitch in image pixels (the last window may sit closer: it is flush with the image edge)."""
    return float(np.median(np.diff(centres))) if len(centres) > 1 else 1.0


def map_layers(m: PSFMap, name: str, scale: Sequence[float] = (1.0, 1.0), translate: Sequence[float] = (0.0, 0.0),
               lead: tuple[int, ...] = (), stack: np.ndarray | None = None) -> list[LayerData]:
    """One image layer per map slice (parameters, confidence, depth µm, σ) plus a labels layer of patches
    that were filled from neighbours (1) or are beyond the model's range (2).

    ``stack`` (lead + (slices, my, mx)) holds the slices of several planes when the input was a stack; the
    map ``m`` of the first plane gives geometry and names. ``scale``/``translate`` are the input layer's
    (the last two axes are Y, X).
    """
    planes, labels, meta = m.to_stack()
    data = planes if stack is None else stack
    sy, sx = scale[-2], scale[-1]
    ty, tx = translate[-2], translate[-1]
    lead_scale, lead_translate = list(scale[:-2]), list(translate[:-2])
    map_scale = lead_scale + [_spacing(m.centres_y) * sy, _spacing(m.centres_x) * sx]
    map_translate = lead_translate + [ty + m.centres_y[0] * sy, tx + m.centres_x[0] * sx]
    layers: list[LayerData] = []
    units = meta["units"]
    for k, label in enumerate(labels):
        if label in ("out_of_range", "reliable"):
            continue
        plane = data[..., k, :, :]
        layers.append((plane, {"name": f"{name} {label} ({units[k]})", "scale": map_scale,
                               "translate": map_translate, "colormap": COLORMAPS.get(label, "gray"),
                               "metadata": {MAP_KEY: {"labels": labels, "meta": meta, "slice": label},
                                            "unit": units[k]}, "visible": label == "defocus",
                               "opacity": 0.45}, "image"))     # over the restored image, which shows through
    if "reliable" in labels:
        flags = np.zeros(data[..., 0, :, :].shape, np.uint8)
        flags[data[..., labels.index("reliable"), :, :] < 0.5] = 1
        flags[data[..., labels.index("out_of_range"), :, :] >= 0.5] = 2
        layers.append((flags, {"name": f"{name} unreliable (1) / out of range (2)", "scale": map_scale,
                               "translate": map_translate, "opacity": 0.5}, "labels"))
    return layers


def restored_layer(image: np.ndarray, name: str, scale, translate, settings: dict | None) -> LayerData:
    return (image, {"name": f"{name} restored", "scale": list(scale), "translate": list(translate),
                    "metadata": {"semiblind_settings": settings or {}}}, "image")


def psf_montage_layer(psfs: np.ndarray, name: str, pixel_scale: float) -> LayerData:
    """The (gy, gx, s, s) PSF grid as one montage image (gy·s × gx·s), in the input's pixel size."""
    gy, gx, s, _ = psfs.shape
    montage = psfs.transpose(0, 2, 1, 3).reshape(gy * s, gx * s)
    return (montage, {"name": f"{name} PSF grid", "scale": [pixel_scale, pixel_scale], "colormap": "gray",
                      "visible": False}, "image")


# ----------------------------------------------------------------------------------------------------------
# the PSF-map file (an ImageJ stack written by `semiblind deconvolve --map` / `psf-map`) as napari layers
# ----------------------------------------------------------------------------------------------------------

def get_reader(path):
    """npe2 reader: a function for SemiBlind map files, None for any other file (napari then asks others)."""
    if isinstance(path, list) or not str(path).lower().endswith((".tif", ".tiff")):
        return None
    try:
        read_map_file(path)
    except ValueError:
        return None
    return _read_layers


def _read_layers(path) -> list[LayerData]:
    m = load_psf_map(path)
    stack, _, _ = read_map_file(path)
    px = m.optics.pixel_size
    return map_layers(m, Path(path).stem, scale=(px, px), stack=stack)


def write_map(path: str, layer_data: list[LayerData]) -> list[str]:
    """npe2 writer: map layers made by the widget or the reader, written back as one map file."""
    from ..io.tiff import write_imagej_tiff

    chosen = [(d, kw) for d, kw, _ in layer_data if MAP_KEY in kw.get("metadata", {})]
    if not chosen:
        raise ValueError("no SemiBlind map layer among the selected layers")
    info = chosen[0][1]["metadata"][MAP_KEY]
    labels, meta = info["labels"], info["meta"]
    by_slice = {kw["metadata"][MAP_KEY]["slice"]: np.asarray(d) for d, kw in chosen}
    missing = [label for label in labels if label not in by_slice and label not in ("out_of_range", "reliable")]
    if missing:
        raise ValueError(f"select all map layers of one map to save it (missing: {', '.join(missing)})")
    shape = next(iter(by_slice.values())).shape
    if len(shape) != 2:
        raise ValueError("only the map of a single 2-D image can be saved as a map file")
    planes = [by_slice.get(label, np.zeros(shape, np.float32)) for label in labels]
    stride_um = float(meta["stride_px"]) * float(meta["optics"]["pixel_size"])
    write_imagej_tiff(path, np.stack(planes).astype(np.float32), stride_um, labels=labels, info=meta)
    return [path]


def sample_data() -> list[LayerData]:
    """A 512² specimen on a tilted plane, blurred by the bundled model's PSFs with Poisson noise."""
    from ..estimation.model import PSFModel
    from ..simulation.simulate import simulate_tilted

    model = PSFModel()
    cfg = model.near_focus.config if model.near_focus is not None else model.config    # as `semiblind simulate`
    sim = simulate_tilted(cfg, seed=3, shape=(512, 512), photons=800.0)
    px = cfg.optics.pixel_size
    return [(sim.blurred, {"name": "tilted specimen (blurred)", "scale": [px, px],
                           "metadata": {"semiblind_optics": cfg.optics.to_dict()}}, "image")]
