"""Optics from where they already are: OME-XML (objective NA, immersion / refractive index, channel emission
wavelengths, physical pixel size, z step, time increment) and the Info of SemiBlind's own ImageJ outputs.

OME-XML is parsed with the standard library (namespace-agnostic ElementTree, any schema version), so no
extra dependency is needed; only what SemiBlind uses is read. Values are in µm (lengths) and s (time).
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from fiji_bridge.io.units import unit_to_um

#: OME ``Objective/@Immersion`` -> refractive index of the immersion medium.
IMMERSION_INDEX = {"oil": 1.518, "water": 1.333, "waterdipping": 1.333, "air": 1.0, "glycerol": 1.47,
                   "silicone": 1.406, "silicon": 1.406}
#: Seconds per OME/ImageJ time unit.
_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6,
            "ns": 1e-9, "min": 60.0, "h": 3600.0, "hr": 3600.0}


@dataclass
class FileOptics:
    """What a file says about its optics (None: not said). ``wavelengths`` has one entry per channel
    (None where a channel has no emission wavelength); ``sources`` says where each value came from."""

    na: float | None = None
    n: float | None = None
    pixel_size: float | None = None
    wavelengths: list[float | None] = field(default_factory=list)
    objective: str | None = None
    channel_names: list[str] = field(default_factory=list)
    z_spacing: float | None = None
    time_interval: float | None = None
    sources: dict[str, str] = field(default_factory=dict)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el, name: str):
    return [c for c in el if _local(c.tag) == name]


def _positive(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _length_um(value, unit, default: str = "µm") -> float | None:
    v = _positive(value)
    if v is None:
        return None
    try:
        factor = unit_to_um(unit or default)
    except ValueError:
        return None
    return None if factor is None else v * factor


def _seconds(value, unit) -> float | None:
    v = _positive(value)
    factor = _SECONDS.get(str(unit or "s").strip().lower())
    return None if v is None or factor is None else v * factor


def parse_ome(xml: str, image: int = 0) -> FileOptics:
    """`FileOptics` of the ``image``-th Image of an OME-XML document (an empty one when it cannot be parsed).

    NA is the Objective's ``LensNA`` (the one the Image's ``ObjectiveSettings`` refers to, else the first
    of its Instrument, else of the file); n is ``ObjectiveSettings/@RefractiveIndex``, else the index of
    the Objective's ``Immersion`` (`IMMERSION_INDEX`); wavelengths are the Channels' ``EmissionWavelength``
    (unit default nm, as the OME schema says); the pixel size is ``PhysicalSizeX`` (square pixels checked
    by the TIFF reader).
    """
    out = FileOptics()
    try:
        root = ET.fromstring(xml)
    except (ET.ParseError, TypeError):
        return out
    images = [el for el in root.iter() if _local(el.tag) == "Image"]
    if not images:
        return out
    img = images[min(image, len(images) - 1)]
    objectives = {el.get("ID"): el for el in root.iter() if _local(el.tag) == "Objective"}
    instruments = {el.get("ID"): el for el in root.iter() if _local(el.tag) == "Instrument"}
    settings = next(iter(_children(img, "ObjectiveSettings")), None)
    objective = None
    if settings is not None and settings.get("ID") in objectives:
        objective = objectives[settings.get("ID")]
    if objective is None:
        ref = next(iter(_children(img, "InstrumentRef")), None)
        inst = instruments.get(ref.get("ID")) if ref is not None else None
        candidates = _children(inst, "Objective") if inst is not None else list(objectives.values())
        objective = candidates[0] if candidates else None
    if objective is not None:
        out.na = _positive(objective.get("LensNA"))
        if out.na is not None:
            out.sources["na"] = "OME Objective LensNA"
        immersion = str(objective.get("Immersion") or "").strip().lower()
        if immersion in IMMERSION_INDEX:
            out.n, out.sources["n"] = IMMERSION_INDEX[immersion], f"OME Objective Immersion {objective.get('Immersion')}"
        mag = objective.get("NominalMagnification")
        parts = [f"{float(mag):g}x" if _positive(mag) else "", f"/{out.na:g}" if out.na else "",
                 f"-{immersion}" if immersion else ""]
        out.objective = "".join(parts) or objective.get("Model")
    if settings is not None and _positive(settings.get("RefractiveIndex")):
        out.n, out.sources["n"] = float(settings.get("RefractiveIndex")), "OME ObjectiveSettings RefractiveIndex"
    if out.na is None:                  # a SemiBlind OME output: the optics it was restored with
        saved = next((el.text for el in root.iter() if _local(el.tag) == "M" and el.get("K") == "semiblind"), None)
        known = parse_imagej_info(saved)
        for key in ("na", "n"):
            if getattr(known, key) is not None and getattr(out, key) is None:
                setattr(out, key, getattr(known, key))
                out.sources[key] = "OME MapAnnotation (SemiBlind optics)"
        out.objective = out.objective or known.objective
    pixels = next(iter(_children(img, "Pixels")), None)
    if pixels is not None:
        out.pixel_size = _length_um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))
        if out.pixel_size is not None:
            out.sources["pixel_size"] = "OME PhysicalSizeX"
        out.z_spacing = _length_um(pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeZUnit"))
        out.time_interval = _seconds(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit"))
        for ch in _children(pixels, "Channel"):
            out.channel_names.append(ch.get("Name") or "")
            out.wavelengths.append(_length_um(ch.get("EmissionWavelength"), ch.get("EmissionWavelengthUnit"),
                                              default="nm"))
        if any(w is not None for w in out.wavelengths):
            out.sources["wavelength"] = "OME Channel EmissionWavelength"
    return out


def parse_imagej_info(info) -> FileOptics:
    """`FileOptics` from the JSON Info SemiBlind writes into its ImageJ outputs (``optics``, ``wavelengths``,
    ``channel_names``, ``objective``); an empty one for any other Info."""
    out = FileOptics()
    try:
        d = json.loads(info) if isinstance(info, str) else None
    except json.JSONDecodeError:
        d = None
    if not isinstance(d, dict):
        return out
    optics = d.get("optics") if isinstance(d.get("optics"), dict) else {}
    for key in ("na", "n"):
        if _positive(optics.get(key)):
            setattr(out, key, float(optics[key]))
            out.sources[key] = "ImageJ Info (SemiBlind optics)"
    waves = d.get("wavelengths") or ([optics["wavelength"]] if _positive(optics.get("wavelength")) else [])
    out.wavelengths = [_positive(w) for w in waves]
    if out.wavelengths:
        out.sources["wavelength"] = "ImageJ Info (SemiBlind optics)"
    out.channel_names = [str(s) for s in d.get("channel_names") or []]
    out.objective = d.get("objective")
    return out
