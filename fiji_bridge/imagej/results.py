"""SemiBlind's result images in ImageJ: the restored image (`restored_to_imageplus`), the PSF parameter map
as a labelled stack (`parameter_map_to_imageplus`), the depth map (`depth_map_to_imageplus`) and a PSF-grid
montage (`psf_montage_to_imageplus`), titled with `result_title`."""
from __future__ import annotations


import numpy as np

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


def restored_to_imageplus(restored: np.ndarray, source, *, info: dict | None = None):
    """The restored image as a 32-bit ImagePlus titled after ``source`` with its calibration copied."""
    imp = numpy_to_imageplus(np.asarray(restored, dtype=np.float32), result_title(source.getTitle(), "restored"),
                             info=info)
    imp.setCalibration(source.getCalibration().copy())
    cal = imp.getCalibration()
    cal.disableDensityCalibration()
    imp.setCalibration(cal)
    return imp


def _grid_calibration(imp, psf_map) -> None:
    """Calibrate a (my, mx) map so its pixels sit at the patch centres in the image's µm coordinates."""
    stride = float(psf_map.stride)
    pixel = float(psf_map.optics.pixel_size)
    cy = np.asarray(psf_map.centres_y, dtype=float)
    cx = np.asarray(psf_map.centres_x, dtype=float)
    set_pixel_size(imp, stride * pixel, origin=(-cx[0] / stride if cx.size else 0.0,
                                                -cy[0] / stride if cy.size else 0.0))


def _map_info(psf_map) -> dict:
    return {
        "semiblind": "psf_map", "names": list(psf_map.names), "units": list(psf_map.units),
        "patch_size": int(psf_map.patch_size), "stride": int(psf_map.stride),
        "optics": psf_map.optics.to_dict(),
        "centres_y": [float(v) for v in np.asarray(psf_map.centres_y)],
        "centres_x": [float(v) for v in np.asarray(psf_map.centres_x)],
    }


def parameter_map_to_imageplus(psf_map, title: str):
    """The PSF parameter map as a labelled 32-bit stack: one slice per parameter, then "confidence".

    Slice labels are the parameter names; units, patch size, stride and optics go into the "Info"
    property. Calibration: one map pixel = ``stride`` image pixels, origin at the first patch centre, so
    map coordinates in µm match the image's.
    """
    params = np.asarray(psf_map.parameters, dtype=np.float32)
    if params.ndim != 3:
        raise ValueError(f"psf_map: parameters must be (P, my, mx), got shape {params.shape}")
    conf = np.asarray(psf_map.confidence, dtype=np.float32)[None]
    stack = np.concatenate([params, conf], axis=0)
    labels = [str(n) for n in psf_map.names] + ["confidence"]
    imp = numpy_to_imageplus(stack, title, axes="ZYX", labels=labels, info=_map_info(psf_map))
    _grid_calibration(imp, psf_map)
    return imp


def depth_map_to_imageplus(psf_map, title: str):
    """The axial-distance map (µm, from `PSFMap.depth_um`) as a 32-bit image on the patch grid."""
    depth = np.asarray(psf_map.depth_um(), dtype=np.float32)
    imp = numpy_to_imageplus(depth, title, info=_map_info(psf_map))
    _grid_calibration(imp, psf_map)
    set_pixel_size(imp, None, value_unit="µm")
    return imp


def psf_montage_to_imageplus(psfs: np.ndarray, pixel_size: float, title: str):
    """The PSF grid used for a deconvolution (``Deconvolution.psfs``) as one montage image, each PSF scaled to
    its maximum, calibrated with the image pixel size."""
    from fiji_bridge.io.report import psf_montage
    return numpy_to_imageplus(psf_montage(np.asarray(psfs), gap=0), title, pixel_size=float(pixel_size))
