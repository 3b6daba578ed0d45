"""Multi-position OME-Zarr: an HCS plate (wells and their fields), a bioformats2raw series layout or a group of
images. Each position is deconvolved as a stack (`fiji_bridge.stacks.process_stack_file`: plane by plane, its own
maps, its axes and calibration kept) and written at the same path of an OME-Zarr output that keeps the input's
groups and their metadata (`fiji_bridge.io.omezarr.write_layout`), so a plate comes out as a plate.

The whole output is one `fiji_bridge.io.atomic.atomic_dir`: it appears under its name only when every
position is done, and a failure (a bad position, Ctrl-C) leaves nothing.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fiji_bridge.validation import Progress

__all__ = ["is_multi_position", "process_positions"]


def is_multi_position(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an OME-Zarr holding several images (or one image below its root), not one image.

    Unreadable folders answer False: reading them as one image then gives the one-line reason.
    """
    from fiji_bridge.io.omezarr import image_paths, is_omezarr
    p = Path(path)
    if not p.is_dir() or not is_omezarr(p):
        return False
    try:
        return image_paths(p) != [""]
    except ValueError:
        return False


def process_positions(in_path: str | os.PathLike, out_path: str | os.PathLike, *,
                      map_path: str | os.PathLike | None = None, report_path: str | os.PathLike | None = None,
                      progress: Progress | None = None, client=None, pyramid: int = 1,
                      **keywords: Any) -> dict:
    """Deconvolve every position of a multi-position OME-Zarr into an OME-Zarr of the same structure.

    Parameters
    ----------
    in_path : path
        The container (``plate.zarr``); `fiji_bridge.io.omezarr.image_paths` lists its positions.
    out_path : path
        The output container; must end in ``.zarr`` (positions are images of an OME-Zarr).
    map_path, report_path : path, optional
        Refused: one map file or report cannot hold several positions (run a position alone for them).
    progress : callable, optional
        ``progress(fraction, message)`` over all positions.
    client : distributed.Client, optional
        Planes of each position as Dask tasks (`fiji_bridge.stacks.process_stack_file`).
    pyramid : int
        Resolution levels of each output image.
    **keywords
        The run settings (`fiji_bridge.settings.RunSettings.keywords`).

    Returns
    -------
    dict
        The first position's summary (optics, maps, settings) with ``outputs`` (the container), ``planes``
        (over all positions) and ``positions`` (their paths).

    Raises
    ------
    ValueError
        One line, before any work, for a map or report asked for, a TIFF output, an output onto (or inside)
        the input or onto something that is not an OME-Zarr.
    """
    from fiji_bridge.io.atomic import atomic_dir
    from fiji_bridge.io.omezarr import image_paths, is_omezarr, write_layout
    from fiji_bridge.stacks import process_stack_file
    in_path, out_path = Path(in_path), Path(out_path)
    images = image_paths(in_path)
    what = f"{in_path.name} holds {len(images)} positions"
    for name, given in (("map", map_path), ("report", report_path)):
        if given is not None:
            raise ValueError(f"{name}: {what}; one {name} file cannot hold them all (run one position, "
                             f"e.g. {in_path / images[0]})")
    if not str(out_path).rstrip("/").lower().endswith(".zarr"):
        raise ValueError(f"output: {what} and is written as an OME-Zarr of the same layout; give OUT.zarr, "
                         f"not {out_path.name}")
    source, target = in_path.resolve(), out_path.resolve()
    if target == source or source in target.parents:
        raise ValueError(f"refusing to overwrite the input file {in_path}")
    if out_path.exists() and not is_omezarr(out_path):
        raise ValueError(f"output {out_path} exists and is not an OME-Zarr image; give a new name")
    done = []
    with atomic_dir(out_path) as tmp:
        write_layout(in_path, tmp, images)
        for k, rel in enumerate(images):
            done.append(process_stack_file(in_path / rel, tmp / rel, output_format="zarr", client=client,
                                           pyramid=pyramid, progress=_share(progress, k, len(images), rel),
                                           **keywords))
    return {**done[0], "outputs": [str(out_path)], "planes": sum(int(d["planes"]) for d in done),
            "positions": images}


def _share(progress: Progress | None, k: int, n: int, name: str) -> Callable[[float, str], None] | None:
    """Position ``k`` of ``n``'s part of the progress of the whole run."""
    if progress is None:
        return None
    return lambda fraction, message: progress((k + fraction) / n, f"{name}: {message}")
