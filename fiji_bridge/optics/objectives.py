"""Objective presets: the numerical aperture and immersion index of common microscope objectives.

A preset sets NA and n together, so that an oil objective is never paired with air (``na must be smaller
than n``). Names read as the engraving: magnification/NA, then the immersion.
"""
from __future__ import annotations

#: name -> (NA, immersion refractive index)
OBJECTIVES: dict[str, tuple[float, float]] = {
    "10x/0.3-air": (0.30, 1.0),
    "10x/0.45-air": (0.45, 1.0),
    "20x/0.75-air": (0.75, 1.0),
    "20x/0.8-air": (0.80, 1.0),
    "40x/0.75-air": (0.75, 1.0),
    "40x/0.95-air": (0.95, 1.0),
    "40x/1.15-water": (1.15, 1.333),
    "40x/1.3-oil": (1.30, 1.518),
    "60x/1.2-water": (1.20, 1.333),
    "60x/1.4-oil": (1.40, 1.518),
    "63x/1.4-oil": (1.40, 1.518),
    "100x/1.4-oil": (1.40, 1.518),
    "100x/1.45-oil": (1.45, 1.518),
}


def objective(name: str) -> tuple[float, float]:
    """(NA, n) of a preset; ValueError listing the presets for an unknown name."""
    key = name.strip().lower()
    for preset, values in OBJECTIVES.items():
        if preset.lower() == key:
            return values
    raise ValueError(f"objective: unknown preset {name!r} (known: {', '.join(OBJECTIVES)})")
