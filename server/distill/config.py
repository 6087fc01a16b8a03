"""Distillation settings: YAML read with safe_load, validated, unknown keys named."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.settings import ConfigError as ConfigError
from server.settings import read_yaml, validate

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schedule(_Strict):
    """A value that moves from ``start`` to ``end`` over training (constant when equal)."""

    start: float
    end: float | None = None
    kind: Literal["linear", "cosine"] = "linear"

    def at(self, progress: float) -> float:
        """The value at ``progress`` in [0, 1]."""
        import math

        end = self.start if self.end is None else self.end
        p = min(max(progress, 0.0), 1.0)
        if self.kind == "cosine":
            p = 0.5 - 0.5 * math.cos(math.pi * p)
        return self.start + (end - self.start) * p


class DataConfig(_Strict):
    """Where the images come from: a directory written by ``fovea data synth``."""

    dir: Path = Path("data/synth")
    train_sites: list[str] = Field(default_factory=lambda: ["site-a", "site-b", "site-c", "site-d"])
    test_site: str | None = "site-e"
    """A site never trained on, for the held-out comparison (None: skip)."""
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share of training-site patients kept for validation."""
    limit: int | None = Field(None, ge=32)
    """Use at most this many training images (quick runs)."""
    test_limit: int | None = Field(None, ge=32)


class ModelRef(_Strict):
    """A registry model: a family or preset name, with config overrides."""

    name: str = "resnet-student"
    config: dict[str, Any] = Field(default_factory=dict)


class LossConfig(_Strict):
    """``alpha * T^2 * KL(t/T || s/T) + (1 - alpha) * CE(s, y)`` plus features and gradability."""

    alpha: Schedule = Field(default_factory=lambda: Schedule(start=0.5))
    temperature: Schedule = Field(default_factory=lambda: Schedule(start=3.0))
    feature_weight: float = Field(1.0, ge=0)
    feature_loss: Literal["cosine", "mse"] = "cosine"
    layer_map: dict[str, str] | Literal["auto"] = "auto"
    """Student tap -> teacher tap; "auto" pairs the deepest taps of each by relative depth."""
    auto_layers: int = Field(2, ge=1, le=8)
    gradable_weight: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        for name, s in (("alpha", self.alpha), ("temperature", self.temperature)):
            for v in (s.start, s.end if s.end is not None else s.start):
                if name == "alpha" and not 0.0 <= v <= 1.0:
                    raise ValueError(f"loss.alpha must stay in [0, 1], got {v}")
                if name == "temperature" and not 0.5 <= v <= 20.0:
                    raise ValueError(f"loss.temperature must stay in [0.5, 20], got {v}")
        return self


class AugmentConfig(_Strict):
    """Label-preserving augmentation."""

    flips: bool = True
    rot90: bool = False
    """Rotations by multiples of 90 degrees: exact, so the smallest lesions stay sharp."""
    rotate_degrees: float = Field(0.0, ge=0, le=180)
    """Small-angle rotations (bilinear): they blur one-pixel lesions at low resolution."""
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    saturation: float = Field(0.05, ge=0, le=1)
    erase_p: float = Field(0.15, ge=0, le=1)
    """Random erasing (noise injection): probability per image."""
    blur: float = Field(0.0, ge=0, le=1)
    """Camera optics: blend each image towards its 3x3 binomial blur by up to this share."""
    noise: float = Field(0.0, ge=0, le=0.1)
    """Camera sensor: add Gaussian noise with a per-image standard deviation up to this (0-1)."""


class TrainConfig(_Strict):
    """Optimisation."""

    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    balance_power: float = Field(0.5, ge=0, le=1)
    """Class-balanced sampling: weight each class by frequency^-power (0: natural, 1: equal)."""
    precision: Literal["fp32", "mixed"] = "fp32"
    """"mixed": fp16 autocast on CUDA, bf16 on CPU."""
    cache_teacher: bool = False
    """Compute the teacher's outputs once on unaugmented images (needs feature_weight 0)."""
    device: str = "auto"
    threads: int | None = Field(None, ge=1)


class MonitorConfig(_Strict):
    """Knowledge retention and gradient consistency, and what to do when retention drops."""

    enabled: bool = True
    probe_size: int = Field(64, ge=8)
    warmup_epochs: int = Field(1, ge=0)
    retention_threshold: float = Field(0.85, gt=0, le=1)
    max_adjustments: int = Field(3, ge=0)
    min_gain: float = Field(0.02, ge=0)
    """An alert adjusts the distillation only when retention rose less than this since the
    previous evaluation (a student still climbing towards its teacher is left alone)."""
    feature_weight_factor: float = Field(1.5, ge=1)
    alpha_step: float = Field(0.1, ge=0, le=0.5)
    lr_factor: float = Field(0.7, gt=0, le=1)


class SearchConfig(_Strict):
    """Temperature and weight search: short runs, chosen on validation."""

    enabled: bool = False
    temperatures: list[float] = Field(default_factory=lambda: [2.0, 3.5, 5.0])
    alphas: list[float] = Field(default_factory=lambda: [0.3, 0.6, 0.9])
    epochs: int = Field(2, ge=1)
    fraction: float = Field(0.5, gt=0, le=1)
    """Share of the training images each trial uses."""
    metric: Literal["accuracy", "kappa", "referable_auc"] = "accuracy"
    compare_without_teacher: bool = True
    """Also run the same short trial with no teacher, and warn when no setting beats it."""

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if not self.temperatures or not self.alphas:
            raise ValueError("search needs at least one temperature and one alpha")
        if any(not 0 <= a <= 1 for a in self.alphas):
            raise ValueError(f"search.alphas must be in [0, 1], got {self.alphas}")
        if any(not 0.5 <= t <= 20 for t in self.temperatures):
            raise ValueError(f"search.temperatures must be in [0.5, 20], got {self.temperatures}")
        return self


class DistillConfig(_Strict):
    """One distillation run: teacher checkpoint -> student, written to ``out``."""

    schema_version: Literal[1] = 1
    teacher: Path | None = Path("runs/teacher/teacher.json")
    """Teacher checkpoint (None: train the student on labels only, a from-scratch baseline)."""
    student: ModelRef = Field(default_factory=ModelRef)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    out: Path = Path("runs/distill")
    seed: int = 0
    bootstrap: int = Field(1000, ge=0)
    """Bootstrap resamples for the final confidence intervals."""
    referral_sensitivity: float | None = Field(0.9, gt=0, lt=1)
    """Referral operating point: the threshold reaching this sensitivity on validation
    (None: refer when P(referable) >= 0.5)."""

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if self.train.cache_teacher and (self.loss.feature_weight > 0 or self.monitor.enabled):
            raise ValueError(
                "train.cache_teacher caches logits only; feature distillation and the monitors "
                "need the live teacher: set loss.feature_weight to 0 and monitor.enabled to "
                "false, or train.cache_teacher to false"
            )
        return self


def parse_config(data: Any, source: str = "<config>") -> DistillConfig:
    """Validate a mapping (as read from YAML) into a :class:`DistillConfig`."""
    return validate(DistillConfig, data, source, "distillation config")


def load_config(path: str | Path) -> DistillConfig:
    """Read and validate a YAML config (``yaml.safe_load``: data only, never code)."""
    return parse_config(read_yaml(path), str(path))


def dump_config(config: DistillConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
