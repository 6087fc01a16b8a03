"""Name + config -> module: the model families and a few named presets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.nets.base import FundusNet
from models.nets.mobilenet import MobileNetV2
from models.nets.resnet import ResNet
from models.nets.vit import ViT

FAMILIES: dict[str, Callable[..., FundusNet]] = {
    "resnet": ResNet,
    "mobilenetv2": MobileNetV2,
    "vit": ViT,
}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet-teacher": ("resnet", {"width": 24, "depths": [2, 2, 2, 2]}),
    "resnet-teacher-small": ("resnet", {"width": 16, "depths": [1, 1, 2, 1]}),
    "resnet-student": ("resnet", {"width": 8, "depths": [1, 1, 1, 1]}),
    "resnet-student-wide": ("resnet", {"width": 11, "depths": [1, 1, 1, 1]}),
    "mobilenetv2-student": (
        "mobilenetv2",
        {"channels": [12, 16, 24, 48], "depths": [1, 1, 2, 1], "expand": 3, "stem": 12},
    ),
    "vit-student": ("vit", {"dim": 64, "depth": 4, "heads": 4, "patch": 8}),
    "vit-teacher": ("vit", {"dim": 192, "depth": 8, "heads": 6, "patch": 8}),
}
"""Named configurations; any family can also be built from an explicit config."""


def build_model(name: str, config: dict[str, Any] | None = None) -> FundusNet:
    """The model of family or preset ``name``, with ``config`` overriding the preset's values.

    An unknown name or constructor argument is an error that names it.
    """
    config = dict(config or {})
    if name in PRESETS:
        family, preset = PRESETS[name]
        config = {**preset, **config}
    else:
        family = name
    try:
        ctor = FAMILIES[family]
    except KeyError:
        known = ", ".join([*FAMILIES, *PRESETS])
        raise ValueError(f"unknown model {name!r}; known families and presets: {known}") from None
    try:
        return ctor(**config)
    except TypeError as e:
        raise ValueError(f"bad config for model family {family!r}: {e}") from None


def family_of(name: str) -> str:
    """The family behind a preset or family name."""
    return PRESETS[name][0] if name in PRESETS else name
