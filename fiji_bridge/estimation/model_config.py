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

from fiji_bridge.optics.parameters import Optics
from fiji_bridge.optics.zernike import noll_index

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
    #: How [low, high] maps onto the network's [-1, 1]: "linear", or "sqrt" (u = sqrt((v - low) / (high - low)))
    #: which spends more of the output range near ``low``, where a small blur changes the image least.
    scale: str = "linear"
    #: Factor on the network's predicted σ that makes it honest on held-out synthetic patches: with it, 68.3 %
    #: of the errors are within 1 σ (``python -m training evaluate --store`` fits it; 1 = as the network says).
    sigma_scale: float = 1.0

    def __post_init__(self) -> None:
        noll_index(self.noll)
        if not isinstance(self.sigma_scale, (int, float)) or isinstance(self.sigma_scale, bool) \
                or not 0 < self.sigma_scale < 100:
            raise ValueError(f"parameters.{self.name}: sigma_scale must be a positive number, got {self.sigma_scale!r}")
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(f"parameters.{self.name}: range [{self.low}, {self.high}] is empty or inverted")
        if self.scale not in ("linear", "sqrt"):
            raise ValueError(f"parameters.{self.name}: scale must be 'linear' or 'sqrt', got {self.scale!r}")

    def normalize(self, value):
        """Physical value -> [-1, 1] (values outside [low, high] are clipped for the 'sqrt' scale)."""
        u = (np.asarray(value) - self.low) / (self.high - self.low)
        if self.scale == "sqrt":
            u = np.sqrt(np.clip(u, 0.0, 1.0))
        return u * 2.0 - 1.0

    def denormalize(self, value):
        """[-1, 1] -> physical value."""
        u = (np.asarray(value) + 1.0) / 2.0
        if self.scale == "sqrt":
            u = np.clip(u, 0.0, None) ** 2
        return u * (self.high - self.low) + self.low

    def std_to_physical(self, value, std):
        """Standard deviation in normalised units at normalised ``value`` -> physical units (first order),
        calibrated by ``sigma_scale``."""
        if self.scale == "sqrt":       # v = low + (high - low) u², u = (value + 1) / 2: dv/dvalue = (high - low) u
            slope = (self.high - self.low) * np.clip((np.asarray(value) + 1.0) / 2.0, 0.0, None)
        else:
            slope = (self.high - self.low) / 2.0
        return np.asarray(std) * slope * self.sigma_scale


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
    #: Side of the context window in units of the patch: the network also sees a ``context_factor``-times
    #: wider window, block-averaged to ``patch_size`` (a coarser pyramid level), so blur wider than a patch
    #: stays readable. 1 = patch only (one input channel, the v1 models).
    context_factor: int = 1
    #: Sampling ``pixel·NA/λ`` of the camera images the model reads, [low, high]; None = only the model's own
    #: sampling within `pixel_size_range` (v1 models). A model with a range reads images resampled to its
    #: own sampling and is told the camera's sampling as an input channel.
    sampling_range: tuple[float, float] | None = None
    #: File name (beside the ONNX file) of the int8-quantised copy of the network (``python -m training
    #: quantize``), which `fiji_bridge.estimation.model.PSFModel` runs on the CPU; None = float only.
    int8_model: str | None = None
    #: File name (beside the ONNX file) of a near-focus model: a model trained on a narrow defocus range near
    #: focus, which reads that range more finely. Its map takes over where this model reads less defocus than
    #: ``near_focus_blend[0]`` (waves RMS), blended linearly up to ``near_focus_blend[1]``, for images whose
    #: sampling it accepts (`fiji_bridge.estimation.psf_map.blend_near_focus`); a near-focus model with a range
    #: head keeps only 1 − P(beyond its range) of that weight. None = this model alone.
    near_focus_model: str | None = None
    near_focus_blend: tuple[float, float] | None = None
    #: The near-focus blend reads the wide model's defocus this many predicted σ (as calibrated by the parameter's
    #: ``sigma_scale``) lower (0 = as read): an uncertain "more blur" hands over to the near-focus model
    #: (over-estimated blur makes RL ring).
    near_focus_sigma: float = 0.0
    #: Optics assumed for images that carry none (no calibration, no option given); None = `optics`. A model
    #: trained at some sampling of its own (0.25 for the envelope model) keeps the defaults users know.
    image_optics: Optics | None = None

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
        for key in ("int8_model", "near_focus_model"):          # files beside this one, by name
            name = getattr(self, key)
            if name is not None and (not isinstance(name, str) or Path(name).name != name
                                     or not name.endswith(".onnx")):
                raise ValueError(f"{key}: must be the name of an .onnx file beside the model, got {name!r}")
        if (self.near_focus_model is None) != (self.near_focus_blend is None):
            raise ValueError("near_focus_model and near_focus_blend: give both or neither")
        if self.near_focus_blend is not None and not 0 < self.near_focus_blend[0] < self.near_focus_blend[1]:
            raise ValueError(f"near_focus_blend: must be [low, high] waves RMS with 0 < low < high, "
                             f"got {list(self.near_focus_blend)}")
        if not isinstance(self.near_focus_sigma, (int, float)) or not 0 <= self.near_focus_sigma <= 3:
            raise ValueError(f"near_focus_sigma: must be a number of σ in [0, 3], got {self.near_focus_sigma!r}")
        if not isinstance(self.context_factor, int) or self.context_factor < 1:
            raise ValueError(f"context_factor: must be a positive integer, got {self.context_factor!r}")
        if self.sampling_range is not None:
            lo, hi = self.sampling_range
            if not 0 < lo <= self.sampling <= hi:
                raise ValueError(f"sampling_range: must satisfy 0 < low <= model sampling ({self.sampling:.3f}) "
                                 f"<= high, got {self.sampling_range}")

    @property
    def default_image_optics(self) -> Optics:
        """Optics of an image that says nothing about its own (`image_optics`, else the model's optics)."""
        return self.image_optics if self.image_optics is not None else self.optics

    @property
    def sampling(self) -> float:
        """The model's own sampling of the diffraction limit, ``pixel·NA/λ`` (0.25 = Nyquist)."""
        return self.optics.pixel_size * self.optics.na / self.optics.wavelength

    @property
    def input_channels(self) -> int:
        """1 (patch) or 3 (patch, context window, log of camera sampling / model sampling)."""
        return 3 if self.context_factor > 1 or self.sampling_range is not None else 1

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

    def std_to_physical(self, values: np.ndarray, stds: np.ndarray) -> np.ndarray:
        """(..., P) standard deviations in normalised units, at normalised ``values`` -> physical units."""
        return np.stack([p.std_to_physical(values[..., k], stds[..., k]) for k, p in enumerate(self.parameters)],
                        -1).astype(np.float32)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optics"] = self.optics.to_dict()
        d["pixel_size_range"] = list(self.pixel_size_range)
        if self.sampling_range is None:
            del d["sampling_range"]          # v1 configs stay byte-identical
        else:
            d["sampling_range"] = list(self.sampling_range)
        if self.context_factor == 1:
            del d["context_factor"]
        if self.int8_model is None:
            del d["int8_model"]
        if not self.near_focus_sigma:
            del d["near_focus_sigma"]
        if self.image_optics is None:
            del d["image_optics"]
        else:
            d["image_optics"] = self.image_optics.to_dict()
        if self.near_focus_model is None:
            del d["near_focus_model"], d["near_focus_blend"]
        else:
            d["near_focus_blend"] = list(self.near_focus_blend or ())
        for p in d["parameters"]:
            if p["scale"] == "linear":
                del p["scale"]
            if p["sigma_scale"] == 1.0:
                del p["sigma_scale"]
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
        if not isinstance(d["parameters"], list) or not all(isinstance(p, dict) for p in d["parameters"]):
            raise ValueError(f"model config: parameters must be a list of objects "
                             f"({{\"name\": ..., \"noll\": ..., \"low\": ..., \"high\": ...}}), got {d['parameters']!r:.80}")
        params = []
        for i, p in enumerate(d["parameters"]):
            extra = set(p) - set(ParameterSpec.__dataclass_fields__)
            if extra:
                raise ValueError(f"model config: parameters[{i}] has unknown key(s) {sorted(extra)}")
            params.append(ParameterSpec(**p))
        d["parameters"] = params
        d["optics"] = Optics.from_dict(d["optics"])
        if d.get("image_optics") is not None:
            d["image_optics"] = Optics.from_dict(d["image_optics"])
        for key in ("pixel_size_range", "sampling_range", "near_focus_blend"):
            if d.get(key) is not None:
                values = d[key]
                if not isinstance(values, (list, tuple)) or len(values) != 2 or \
                        not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                    raise ValueError(f"model config: {key} must be two numbers [low, high], got {values!r}")
                d[key] = (float(values[0]), float(values[1]))
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from fiji_bridge.io.atomic import write_text
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

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


def assemble_inputs(patches: np.ndarray, context: np.ndarray | None = None,
                    log_sampling: np.ndarray | float | None = None) -> np.ndarray:
    """Network input used identically by training and inference.

    Parameters
    ----------
    patches : ndarray, shape (B, P, P)
        Raw intensities at the model's sampling.
    context : ndarray, shape (B, P, P), optional
        The ``context_factor``-times wider window around each patch, block-averaged to P×P (raw intensities).
        None for one-channel (v1) models.
    log_sampling : float or ndarray (B,), optional
        ``log(camera sampling / model sampling)`` of each patch (0 when the camera samples as the model).

    Returns
    -------
    ndarray, shape (B, 1, P, P) or (B, 3, P, P), float32: each image channel standardised per patch
    (`normalize_patches`), the third channel constant ``log_sampling``.
    """
    x = normalize_patches(patches)
    if context is None:
        return x
    b, _, p, _ = x.shape
    ls = np.broadcast_to(np.asarray(0.0 if log_sampling is None else log_sampling, np.float32), (b,))
    return np.concatenate([x, normalize_patches(context),
                           np.broadcast_to(ls[:, None, None, None], (b, 1, p, p))], axis=1).astype(np.float32)
