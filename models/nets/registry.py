"""Name + config -> module: the model families and a few named presets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.nets.adapters import ADAPTERS, read_hf_config
from models.nets.base import FundusNet
from models.nets.mobilenet import MobileNetV2
from models.nets.onnx_teacher import OnnxTeacher
from models.nets.resnet import ResNet
from models.nets.vit import ViT
from models.sources import SourceError, parse_source

FAMILIES: dict[str, Callable[..., FundusNet]] = {
    "resnet": ResNet,
    "mobilenetv2": MobileNetV2,
    "vit": ViT,
    **ADAPTERS,
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

    ``name`` may also be a source string (:func:`models.sources.parse_source`): ``module:``,
    ``hf:``, ``timm:``, ``torchvision:`` or ``onnx:``, with ``config`` the adapter's further
    arguments. An unknown name or constructor argument is an error that names it.
    """
    config = dict(config or {})
    if ":" in name:
        return _from_source(name, config)
    if name in PRESETS:
        family, preset = PRESETS[name]
        config = {**preset, **config}
    else:
        family = name
    try:
        ctor = FAMILIES[family]
    except KeyError:
        known = ", ".join([*FAMILIES, *PRESETS])
        raise ValueError(
            f"unknown model {name!r}; known families and presets: {known}; or a source such as "
            "module:package.module:factory, hf:CONFIG.json, timm:NAME, torchvision:NAME"
        ) from None
    try:
        return ctor(**config)
    except TypeError as e:
        raise ValueError(f"bad config for model family {family!r}: {e}") from None


def _from_source(text: str, config: dict[str, Any]) -> FundusNet:
    source = parse_source(text)
    kind, target = source.kind, source.target
    if kind == "fovea":
        return build_model(target, config)
    if kind == "onnx":
        if config:
            raise SourceError(f"{text}: an ONNX teacher takes no config (got {sorted(config)})")
        return OnnxTeacher(target)
    if kind == "module":
        arguments = {"factory": target, **config}
    elif kind == "hf":
        arguments = {"config": read_hf_config(target), **config}
    else:
        arguments = {"name": target, **config}
    return build_model(kind, arguments)


def family_of(name: str) -> str:
    """The family behind a preset or family name."""
    return PRESETS[name][0] if name in PRESETS else name
