"""The configuration that travels with a PSF-regression model (JSON beside the ONNX file).

Training writes it and inference reads only it: parameter names, Noll indices, units, ranges and
their normalisation, patch size, PSF size, the optics the model was trained for, the input
normalisation, the output layout, a description of the training data and the measured metrics.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .optics import Optics
from .zernike import noll_index

FORMAT_VERSION = 1
#: Per-patch input normalisation; implemented once in `normalize_patches`.
INPUT_NORMALIZATION = "per-patch zero mean, unit standard deviation (std floor 1e-6)"


@dataclass(frozen=True)
class ParameterSpec:
    """One regressed PSF parameter: a Zernike coefficient in waves RMS drawn from [low, high]."""

    name: str
    noll: int
    low: float
    high: float
    unit: str = "waves RMS"

    def __post_init__(self) -> None:
        noll_index(self.noll)
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(f"parameters.{self.name}: range [{self.low}, {self.high}] is empty or inverted")

    def normalize(self, value):
        """Physical value -> [-1, 1]."""
        return (np.asarray(value) - self.low) / (self.high - self.low) * 2.0 - 1.0

    def denormalize(self, value):
        """[-1, 1] -> physical value."""
        return (np.asarray(value) + 1.0) / 2.0 * (self.high - self.low) + self.low


@dataclass
class ModelConfig:
    """Everything inference needs to know about a model, and what it was trained on."""

    parameters: list[ParameterSpec]
    patch_size: int
    psf_size: int
    optics: Optics
    accuracy_tolerance: float = 0.03          # waves RMS; |error| <= tolerance counts as accurate
    pixel_size_range: tuple[float, float] = (0.5, 2.0)   # accepted image/model pixel-size ratio
    outputs: dict = field(default_factory=lambda: {"params": "normalised parameters in [-1, 1], (B, P)",
                                                   "log_var": "log variance of normalised parameters, (B, P)",
                                                   "info_logit": "logit of 'patch carries blur information', (B, 1)"})
    input_name: str = "patch"
    input_normalization: str = INPUT_NORMALIZATION
    version: str = "0"
    format_version: int = FORMAT_VERSION
    training_data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.parameters:
            raise ValueError("parameters: a model needs at least one parameter")
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"parameters: duplicate names in {names}")
        if not isinstance(self.patch_size, int) or self.patch_size < 16 or self.patch_size % 16:
            raise ValueError(f"patch_size: must be a multiple of 16 and >= 16 (network downsamples by 16), "
                             f"got {self.patch_size!r}")
        if not isinstance(self.psf_size, int) or self.psf_size < 3 or self.psf_size % 2 == 0:
            raise ValueError(f"psf_size: must be an odd integer >= 3, got {self.psf_size!r}")
        lo, hi = self.pixel_size_range
        if not 0 < lo <= 1 <= hi:
            raise ValueError(f"pixel_size_range: must satisfy 0 < low <= 1 <= high, got {self.pixel_size_range}")
        if self.accuracy_tolerance <= 0:
            raise ValueError("accuracy_tolerance: must be positive")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def nolls(self) -> list[int]:
        return [p.noll for p in self.parameters]

    @property
    def units(self) -> list[str]:
        return [p.unit for p in self.parameters]

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """(..., P) physical -> normalised."""
        return np.stack([p.normalize(values[..., k]) for k, p in enumerate(self.parameters)], -1).astype(np.float32)

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """(..., P) normalised -> physical."""
        return np.stack([p.denormalize(values[..., k]) for k, p in enumerate(self.parameters)], -1).astype(np.float32)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optics"] = self.optics.to_dict()
        d["pixel_size_range"] = list(self.pixel_size_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model config: unknown key(s) {sorted(unknown)}")
        for key in ("parameters", "patch_size", "psf_size", "optics"):
            if key not in d:
                raise ValueError(f"model config: missing key {key!r}")
        params = []
        for i, p in enumerate(d["parameters"]):
            extra = set(p) - set(ParameterSpec.__dataclass_fields__)
            if extra:
                raise ValueError(f"model config: parameters[{i}] has unknown key(s) {sorted(extra)}")
            params.append(ParameterSpec(**p))
        d["parameters"] = params
        d["optics"] = Optics.from_dict(d["optics"])
        if "pixel_size_range" in d:
            d["pixel_size_range"] = tuple(d["pixel_size_range"])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ValueError(f"model config not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"model config {path} is not valid JSON: {exc}") from None
        except TypeError as exc:
            raise ValueError(f"model config {path}: {exc}") from None


def normalize_patches(patches: np.ndarray) -> np.ndarray:
    """Per-patch standardisation used identically by training and inference.

    Parameters
    ----------
    patches : ndarray, shape (B, P, P)
        Raw intensities.

    Returns
    -------
    ndarray, shape (B, 1, P, P), float32: zero mean, unit std per patch (std floored at 1e-6).
    """
    p = np.asarray(patches, dtype=np.float32)
    mean = p.mean(axis=(-2, -1), keepdims=True)
    std = p.std(axis=(-2, -1), keepdims=True)
    return ((p - mean) / np.maximum(std, 1e-6))[:, None]
