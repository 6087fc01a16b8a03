"""Distillation settings: YAML read with safe_load, validated, unknown keys named."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models import SOURCE_KINDS, TEACHER_ONLY
from server.training import (
    AugmentConfig,
    DataConfig,
    ModelRef,
    Schedule,
    TrainConfig,
    read_yaml,
    validate,
)

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    metric: Literal["accuracy", "kappa", "referable_auc", "mean_auc"] = "accuracy"
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
    teacher: Path | ModelRef | None = Path("runs/teacher/teacher.json")
    """Teacher checkpoint, or a model by source (``onnx:teacher.onnx``, ``{name: hf:DIR,
    weights: model.safetensors}``); None: train the student on labels only (a baseline)."""
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
    referral_sensitivity: Annotated[float, Field(gt=0, lt=1)] | Literal["task"] | None = "task"
    """Referral operating point: the threshold reaching this sensitivity on validation
    (``task``: the task's ``referral.target_sensitivity``, 0.95 for DR grading; None: refer
    when P(referable) >= 0.5)."""

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_source(cls, value: Any) -> Any:
        # "onnx:t.onnx" is a source; "runs/teacher/teacher.json" (or "C:/..." ) a checkpoint
        if isinstance(value, str) and value.partition(":")[0] in SOURCE_KINDS:
            return {"name": value}
        return value

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if self.student.kind in TEACHER_ONLY:
            raise ValueError(
                f"student {self.student.name!r}: {self.student.kind}: models are teachers only "
                "(they cannot be trained)"
            )
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
