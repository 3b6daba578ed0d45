"""The pixels the ImageJ command works on: every plane of an image or hyperstack (`image_planes`, axes from
`fiji_bridge.imagej.imageplus_axes`), restricted to the bounding box of the selection (`selection_box`).

A rectangle restricts the run to itself; any other area selection (oval, polygon, freehand, ...) to its
bounding box, with a line in ImageJ's log saying so; a line or point selection encloses no area, so it is
left aside with a log line. The box is clipped to the image.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fiji_bridge.imagej.convert import imageplus_axes, imageplus_to_numpy


@dataclass(frozen=True)
class Box:
    """A region of the image in pixels: corner (x, y) and size (width, height)."""

    x: int
    y: int
    width: int
    height: int

    def crop(self, planes: np.ndarray) -> np.ndarray:
        """The region of every YX plane of ``planes`` (a view)."""
        return planes[..., self.y:self.y + self.height, self.x:self.x + self.width]

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


def selection_box(imp, log: Callable[[str], None]) -> Box | None:
    """The region a selection of ``imp`` restricts the run to; None without a usable selection.

    Parameters
    ----------
    imp : ij.ImagePlus
        The input; its selection (``getRoi``) is read, not changed.
    log : callable
        Receives one line when a selection is used through its bounding box, or left aside.
    """
    roi = imp.getRoi()
    if roi is None:
        return None
    kind = str(roi.getTypeAsString()).lower()
    if not roi.isArea():
        log(f"the {kind} selection encloses no area: the whole image is deconvolved")
        return None
    bounds = roi.getBounds()
    width, height = int(imp.getWidth()), int(imp.getHeight())
    x0, y0 = max(int(bounds.x), 0), max(int(bounds.y), 0)
    x1, y1 = min(int(bounds.x + bounds.width), width), min(int(bounds.y + bounds.height), height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("selection: it lies outside the image; remove it (Edit > Selection > Select None)")
    box = Box(x0, y0, x1 - x0, y1 - y0)
    if int(roi.getType()) != int(roi.RECTANGLE) or int(roi.getCornerDiameter()) > 0:
        log(f"the {kind} selection is not a rectangle: its bounding box {box.width}x{box.height} at "
            f"({box.x}, {box.y}) is deconvolved")
    return box


def image_planes(imp, box: Box | None = None) -> tuple[np.ndarray, str]:
    """Every plane of ``imp`` (restricted to ``box``) as float32, with its axes (a subset of ``"TZCYX"``).

    Signed 16-bit images (stored by ImageJ with a +32768 offset) get their true values back.
    """
    data = imageplus_to_numpy(imp)
    planes = data.astype(np.float32, copy=False)
    if data.dtype == np.uint16 and bool(imp.getCalibration().isSigned16Bit()):
        planes = planes - 32768.0
    if box is not None:
        planes = np.ascontiguousarray(box.crop(planes))
    return planes, imageplus_axes(imp)
