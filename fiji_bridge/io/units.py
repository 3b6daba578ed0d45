"""Calibration units -> µm: the one unit table, for TIFF/OME metadata (`fiji_bridge.io.tiff`) and ImageJ
calibrations (`fiji_bridge.imagej.convert`)."""
from __future__ import annotations

#: Calibration unit (lower case) -> µm per unit. "pixel"/"" mean uncalibrated.
_UNIT_TO_UM = {
    "µm": 1.0, "\u03bcm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "micrometers": 1.0, "micrometres": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "nanometers": 1e-3, "nanometres": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "millimeters": 1e3, "millimetres": 1e3,
    "cm": 1e4, "m": 1e6, "meter": 1e6, "metre": 1e6, "inch": 25400.0, "inches": 25400.0,
    "\u00c5": 1e-4, "\u212b": 1e-4, "angstrom": 1e-4, "angstroms": 1e-4, "pm": 1e-6, "picometer": 1e-6,
    "picometre": 1e-6,
}
_UNCALIBRATED = {"", "pixel", "pixels", "px"}


def unit_to_um(unit: str) -> float | None:
    """µm per calibration unit; None for "pixel" (uncalibrated).

    Raises
    ------
    ValueError
        For a unit that is not a length.
    """
    key = str(unit).strip()
    if key.lower() in ("\\u00b5m", "\\u03bcm"):          # ImageJ's escaped µm in its TIFF metadata
        key = "µm"
    if key.lower() in _UNCALIBRATED:
        return None
    for candidate in (key, key.lower()):
        if candidate in _UNIT_TO_UM:
            return _UNIT_TO_UM[candidate]
    raise ValueError(f"calibration unit {unit!r} is not a length (use µm, nm or mm)")
