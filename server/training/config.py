"""The settings every training stage shares: data, model references, augmentation, optimisation.

Distillation, compression and federated fine-tuning each add their own sections around these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import parse_source


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
    workers: int | None = Field(None, ge=0, le=64)
    """DataLoader worker processes reading sharded images ahead of training (None: up to two
    for a prepared site on disk, none for images in memory)."""


class ModelRef(_Strict):
    """A model by source: a Fovea family or preset name (``fovea:NAME``), ``module:pkg.mod:fn``,
    ``hf:CONFIG_OR_DIR``, ``timm:NAME``, ``torchvision:NAME`` or (a teacher only)
    ``onnx:PATH``; with config overrides and optionally pretrained weights from a local file."""

    name: str = "resnet-student"
    config: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = None
    """Pretrained weights: a ``.safetensors``, or a ``.pth`` read with ``weights_only``."""

    @field_validator("name")
    @classmethod
    def _source(cls, name: str) -> str:
        parse_source(name)  # the spelling, the package it needs, a module path's shape
        return name

    @property
    def kind(self) -> str:
        """The source kind (``fovea`` for a bare name)."""
        return parse_source(self.name).kind


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
