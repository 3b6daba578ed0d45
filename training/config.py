"""Training configuration (JSON): the model config that ships, plus synthesis, network and optimiser settings."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fiji_bridge.estimation.model_config import ModelConfig


@dataclass
class NoiseConfig:
    """Camera model: expected counts = photons · (background + contrast · blurred specimen)."""

    photons: tuple[float, float] = (30.0, 3000.0)     # peak photon count, drawn log-uniformly
    background: tuple[float, float] = (0.0, 0.3)      # fraction of the peak
    contrast: tuple[float, float] = (0.3, 1.0)
    read_noise: tuple[float, float] = (0.0, 3.0)      # Gaussian read noise σ in photo-electrons


@dataclass
class SynthesisConfig:
    blank_fraction: float = 0.08      # patches with no structure at all (must be flagged uninformative)
    p_real: float = 0.5               # real-image crops vs procedural specimens
    scale_range: tuple[float, float] = (0.5, 1.0)   # downscale only: upscaled crops look blurred
    min_signal_to_noise: float = 0.5  # std of noise-free signal / noise std below which a patch is uninformative
    # Camera sampling pixel·NA/λ, drawn log-uniformly (models with a sampling_range); None = the model's own.
    camera_sampling: tuple[float, float] | None = None
    # Fraction of samples whose defocus lies beyond the model's range, up to `beyond_factor` × its top: they
    # teach the out-of-range flag instead of being clamped to the top of the range.
    beyond_fraction: float = 0.0
    beyond_factor: float = 1.3
    # Each sharp specimen is blurred by this many different PSFs in a batch (specimens are the costly part).
    specimen_reuse: int = 1
    # Fraction of samples (context models) blurred by the non-paraxial, apodised focal-shift pupil of an
    # objective with NA/n drawn from `relative_na` (labels: the Z4 coefficient of that depth, as the runtime's
    # `defocus_to_z` converts it) instead of the Z4-only pupil; real objectives are not Z4-only.
    focal_shift_fraction: float = 0.0
    relative_na: tuple[float, float] = (0.25, 0.95)


@dataclass
class TrainConfig:
    steps: int = 8000
    batch_size: int = 96
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 250
    workers: int = 1
    widths: tuple[int, ...] = (16, 32, 64, 128, 192)
    threads: int = 1              # torch intra-op threads (two OpenMP threads stall each other under load)
    # regress beyond-range samples to the top of the range instead of leaving them out (`loss_terms`)
    beyond_at_top: bool = False


@dataclass
class TrainingConfig:
    model: ModelConfig
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for section in (self.noise, self.synthesis):
            for key, value in asdict(section).items():
                if isinstance(value, (tuple, list)) and (len(value) != 2 or value[0] > value[1]):
                    raise ValueError(f"{type(section).__name__}.{key}: range {value} is not [low, high]")
        window = self.model.patch_size * self.model.context_factor
        if self.model.psf_size > window:
            raise ValueError(f"model.psf_size ({self.model.psf_size}) must not exceed the window the model reads "
                             f"(patch_size × context_factor = {window})")
        if self.train.steps < 1 or self.train.batch_size < 2:
            raise ValueError("train.steps must be >= 1 and train.batch_size >= 2")

    def to_dict(self) -> dict:
        synthesis = asdict(self.synthesis)
        if not self.synthesis.focal_shift_fraction:      # configs from before the option stay identical
            del synthesis["focal_shift_fraction"], synthesis["relative_na"]
        train = asdict(self.train)
        if not self.train.beyond_at_top:                 # configs from before the option stay identical
            del train["beyond_at_top"]
        return {"model": self.model.to_dict(), "noise": asdict(self.noise), "synthesis": synthesis,
                "train": train}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingConfig":
        unknown = set(d) - {"model", "noise", "synthesis", "train"}
        if unknown:
            raise ValueError(f"training config: unknown section(s) {sorted(unknown)}")
        if "model" not in d:
            raise ValueError("training config: missing section 'model'")
        sections = {}
        for name, kind in (("noise", NoiseConfig), ("synthesis", SynthesisConfig), ("train", TrainConfig)):
            values = dict(d.get(name, {}))
            bad = set(values) - set(kind.__dataclass_fields__)
            if bad:
                raise ValueError(f"training config: unknown key(s) {sorted(f'{name}.{k}' for k in bad)}")
            sections[name] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        return cls(model=ModelConfig.from_dict(d["model"]), **sections)

    @classmethod
    def load(cls, path: str | Path) -> "TrainingConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ValueError(f"training config not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"training config {path} is not valid JSON: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
