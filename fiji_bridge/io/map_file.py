"""The PSF-map file: the ImageJ stack written by ``semiblind deconvolve --map`` / ``semiblind psf-map`` /
`fiji_bridge.pipeline.write_psf_map`, read back as a `PSFMap` (no napari or ImageJ needed).

Slices (labels): one per parameter (waves RMS), ``confidence``, ``depth_um``, and for models that predict
them ``defocus_sigma``, ``out_of_range``, ``reliable``; the Info property holds the geometry (centres,
stride, patch and PSF size, image shape), the parameter names/units/Noll indices and the optics. A stack's
map file holds the maps of several planes one after the other (``planes`` in the Info: their indices
along the stack's ``axes``); ``load_psf_map(path, plane=k)`` reads the k-th.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fiji_bridge.estimation.psf_map import PSFMap

__all__ = ["read_map_file", "load_psf_map"]


def read_map_file(path: str | Path) -> tuple[np.ndarray, list[str], dict]:
    """(stack, slice labels, metadata) of a SemiBlind map file; ValueError if it is not one. ``stack`` is
    (slices, my, mx), or (planes, slices, my, mx) for the map file of a stack."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"psf_map: file not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            ij = tif.imagej_metadata or {}
            stack = tif.asarray()
    except Exception as exc:        # tifffile raises several types for non-TIFF / corrupt files
        raise ValueError(f"psf_map: {path.name} is not a readable TIFF ({' '.join(str(exc).split())})") from None
    try:
        meta = json.loads(ij.get("Info", ""))
    except (TypeError, json.JSONDecodeError):
        meta = None
    labels = ij.get("Labels")
    if not isinstance(meta, dict) or "parameters" not in meta or labels is None:
        raise ValueError(f"psf_map: {path.name} is not a SemiBlind PSF map")
    n_slices = len(meta.get("labels") or labels)
    planes = len(meta.get("planes") or [None])
    shape = (planes, n_slices) if planes > 1 else (n_slices,)
    try:
        stack = np.asarray(stack, np.float32).reshape(*shape, *stack.shape[-2:])
    except ValueError:
        raise ValueError(f"psf_map: {path.name} has {np.prod(stack.shape[:-2])} slices, not the "
                         f"{np.prod(shape)} its metadata describes") from None
    return stack, list(meta.get("labels") or labels)[:n_slices], meta


def load_psf_map(path: str | Path, plane: int = 0) -> PSFMap:
    """A saved map file as a `PSFMap` (deconvolve with it: ``deconvolve(image, psf_map=load_psf_map(p))``;
    ``semiblind deconvolve --psf-map MAP.tif``). ``plane``: which plane's map of a stack's map file."""
    stack, labels, meta = read_map_file(path)
    if stack.ndim == 4:
        if not 0 <= plane < stack.shape[0]:
            raise ValueError(f"psf_map: plane must be 0 to {stack.shape[0] - 1}, got {plane}")
        stack = stack[plane]
        if meta.get("plane_optics"):                # each plane's map at its channel's wavelength
            meta = {**meta, "optics": meta["plane_optics"][plane],
                    "psf_size_px": meta.get("plane_psf_size_px", [meta.get("psf_size_px")] * (plane + 1))[plane]}
    try:
        return PSFMap.from_stack(stack, labels, meta)
    except ValueError as exc:
        raise ValueError(f"psf_map: {Path(path).name}: {exc}") from None
