"""Backbones from elsewhere as Fovea networks: your own module, Hugging Face, timm, torchvision.

Each adapter wraps the backbone, puts Fovea's head (the task's outputs) on its pooled
features and taps named modules by forward hooks. Its config names the source and its
arguments, so a checkpoint rebuilds it; weights never come from the network.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from models.nets.attention import block_list, set_head_counts_
from models.nets.base import FundusNet
from models.nets.taps import as_map, auto_taps, capture, pooled, probe
from models.sources import SourceError, extra_message

Taps = str | list[str]


class SourceNet(FundusNet):
    """A backbone with Fovea's head on its pooled features; taps by hooks on named modules.

    ``taps`` is ``"auto"`` (``tap_count`` blocks at even relative depths) or module names of
    the backbone; ``image_size`` is the side of the dummy input that finds the feature width;
    ``heads`` (left by head pruning) is each attention's head count, which the library's own
    config cannot say. ``depth_key`` names the config entry holding a transformer's block count
    (where the family has one), so blocks can be removed.
    """

    depth_key: tuple[str, str] | None = None

    def __init__(
        self,
        config: dict[str, Any],
        backbone: nn.Module,
        taps: Taps = "auto",
        tap_count: int = 4,
        image_size: int = 64,
        dropout: float = 0.0,
        heads: list[int] | None = None,
    ) -> None:
        if heads is not None:
            set_head_counts_(backbone, heads)
            config = {**config, "heads": list(heads)}
        seen = probe(backbone, image_size)
        names = auto_taps(seen, tap_count) if taps == "auto" else list(taps)
        for name in names:
            if name not in seen.maps:
                some = ", ".join(list(seen.maps)[-8:]) or "none"
                raise SourceError(
                    f"tap {name!r} is not a module of the backbone that gives a feature map; "
                    f"some that do: {some}"
                )
        config = {**config, "taps": taps, "tap_count": tap_count, "image_size": image_size}
        super().__init__({**config, "dropout": dropout}, seen.width, dropout)
        self.backbone = backbone
        self._tap_modules = tuple(names)

    def transformer_blocks(self) -> nn.Sequential | nn.ModuleList | None:
        """The backbone's transformer blocks when they can be removed (a family with a depth
        setting, blocks holding one attention each), else None."""
        found = block_list(self.backbone) if self.depth_key else None
        return found[1] if found else None

    def remove_block_(self, index: int) -> None:
        """Drop transformer block ``index`` in place; the config's depth, heads and taps follow,
        so the config rebuilds this model."""
        found = block_list(self.backbone) if self.depth_key else None
        if found is None or self.depth_key is None:
            raise ValueError(f"{self.family}: no transformer blocks to remove from this backbone")
        prefix, blocks = found
        del blocks[index]
        section, key = self.depth_key
        self.config[section] = {**self.config[section], key: len(blocks)}
        if isinstance(self.config.get("heads"), list):
            self.config["heads"] = [h for i, h in enumerate(self.config["heads"]) if i != index]
        if self.config["taps"] == "auto":  # as the constructor derives them
            seen = probe(self.backbone, self.config["image_size"])
            self._tap_modules = tuple(auto_taps(seen, self.config["tap_count"]))
        else:
            self._tap_modules = _renumbered(self._tap_modules, prefix, index)
            self.config["taps"] = list(self._tap_modules)

    @property
    def tap_names(self) -> tuple[str, ...]:
        """The tapped modules' names in the backbone, shallow to deep."""
        return self._tap_modules

    def forward_taps(
        self, x: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Outputs and every feature tap, from one pass of the backbone."""
        with capture(self.backbone, list(self._tap_modules)) as captured:
            features = pooled(self.backbone(self._input(x)))
        taps: dict[str, torch.Tensor] = {}
        for name in self._tap_modules:
            m = as_map(captured.get(name))
            if m is None:
                raise RuntimeError(f"tap {name!r} gave no feature map on this input")
            taps[name] = m
        return self._answer(features), taps


def _renumbered(taps: tuple[str, ...], prefix: str, removed: int) -> tuple[str, ...]:
    """Tap names after block ``removed`` of ``prefix`` is gone: later blocks move up one, a tap
    in the removed block moves to the block before it (or the new first block)."""
    out = []
    for name in taps:
        rest = name[len(prefix) + 1 :] if prefix else name
        head, _, tail = rest.partition(".")
        if (prefix and not name.startswith(prefix + ".")) or not head.isdigit():
            out.append(name)
            continue
        i = int(head)
        i = i - 1 if i > removed or (i == removed and i > 0) else i
        out.append(".".join(p for p in (prefix, str(i), tail) if p))
    return tuple(dict.fromkeys(out))


def _import_extra(kind: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except Exception as e:  # an installed but broken package fails with more than ImportError
        raise SourceError(extra_message(kind, f"{type(e).__name__}: {e}")) from None


def _refuse_downloads(kind: str, kwargs: dict[str, Any], keys: tuple[str, ...]) -> None:
    asked = [k for k in keys if kwargs.get(k) not in (None, False)]
    if asked:
        raise SourceError(
            f"{kind}: {', '.join(asked)} would download weights; Fovea loads pretrained "
            "weights only from a local .safetensors or .pth file (the model's weights: option)"
        )


def call_factory(target: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The backbone from ``package.module:factory`` called with ``kwargs``."""
    module_path, _, name = target.rpartition(":")
    where = f"module:{target}"
    try:
        module = importlib.import_module(module_path)
    except ImportError as e:
        raise SourceError(
            f"{where}: cannot import {module_path!r} ({e}); is its folder on PYTHONPATH, "
            "or the package installed in this environment?"
        ) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise SourceError(
            f"{where}: {module_path} has no callable {name!r}; its public callables: "
            f"{', '.join(found) or 'none'}"
        )
    try:
        made = factory(**(kwargs or {}))
    except TypeError as e:
        raise SourceError(f"{where}: calling {name}(**{kwargs or {}}) failed: {e}") from None
    if not isinstance(made, nn.Module):
        raise SourceError(f"{where}: {name}() returned {type(made).__name__}, not an nn.Module")
    return made


class ModuleNet(SourceNet):
    """Your own backbone: ``factory`` is ``package.module:function`` returning an nn.Module."""

    family = "module"

    def __init__(
        self,
        factory: str,
        kwargs: dict[str, Any] | None = None,
        taps: Taps = "auto",
        tap_count: int = 4,
        image_size: int = 64,
        dropout: float = 0.0,
        heads: list[int] | None = None,
    ) -> None:
        backbone = call_factory(factory, kwargs)
        config = {"factory": factory, "kwargs": dict(kwargs or {})}
        super().__init__(config, backbone, taps, tap_count, image_size, dropout, heads)


def read_hf_config(location: str | Path) -> dict[str, Any]:
    """A Hugging Face config as a dict, from a ``config.json`` or a directory holding one.

    Only local files: a hub model id is refused, since nothing may download.
    """
    path = Path(location)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise SourceError(
            f"hf:{location}: no such config file or directory; Fovea builds Hugging Face models "
            "from a local config only (no hub downloads): write one with "
            "config.save_pretrained(DIR) or as JSON"
        )
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise SourceError(f"hf:{location}: {file} is not a JSON config: {e}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise SourceError(f'hf:{location}: {file} has no model_type (e.g. "vit", "resnet")')
    return data


class HFNet(SourceNet):
    """A Hugging Face transformers base model (no task head) built from ``config`` with random
    weights; ``image_size`` defaults to the config's."""

    family = "hf"
    depth_key = ("config", "num_hidden_layers")

    def __init__(
        self,
        config: dict[str, Any],
        taps: Taps = "auto",
        tap_count: int = 4,
        image_size: int | None = None,
        dropout: float = 0.0,
        heads: list[int] | None = None,
    ) -> None:
        transformers = _import_extra("hf", "transformers")
        settings = {k: v for k, v in config.items() if k != "model_type"}
        try:
            hf_config = transformers.AutoConfig.for_model(config["model_type"], **settings)
            backbone = transformers.AutoModel.from_config(hf_config)
        except (KeyError, ValueError, TypeError) as e:
            raise SourceError(f"hf: cannot build a model from this config: {e}") from None
        size = image_size or _hf_image_size(hf_config)
        config = {"config": dict(config)}
        super().__init__(config, backbone, taps, tap_count, size, dropout, heads)

    def remove_block_(self, index: int) -> None:
        """Drop transformer block ``index`` in place (see :meth:`SourceNet.remove_block_`); the
        backbone's own config follows too."""
        super().remove_block_(index)
        hf_config = getattr(self.backbone, "config", None)
        if hf_config is not None:
            hf_config.num_hidden_layers = self.config["config"]["num_hidden_layers"]


def _hf_image_size(hf_config: Any) -> int:
    size = getattr(hf_config, "image_size", None)
    if isinstance(size, list | tuple):
        size = size[0]
    return int(size) if size else 64


class _NamedArchitecture(SourceNet):
    """An architecture a library builds by name with random weights (``timm:``,
    ``torchvision:``): subclasses say which package, which arguments would download weights,
    and how to build the backbone without its classifier."""

    package: str = ""
    download_keys: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        kwargs: dict[str, Any] | None = None,
        taps: Taps = "auto",
        tap_count: int = 4,
        image_size: int = 64,
        dropout: float = 0.0,
        heads: list[int] | None = None,
    ) -> None:
        library = _import_extra(self.family, self.package)
        kwargs = dict(kwargs or {})
        _refuse_downloads(self.family, kwargs, self.download_keys)
        backbone = self._backbone(library, name, kwargs)
        config = {"name": name, "kwargs": kwargs}
        super().__init__(config, backbone, taps, tap_count, image_size, dropout, heads)

    def _backbone(self, library: ModuleType, name: str, kwargs: dict[str, Any]) -> nn.Module:
        raise NotImplementedError


class TimmNet(_NamedArchitecture):
    """A timm architecture by name (``timm.create_model``, random weights, no classifier)."""

    family = "timm"
    package = "timm"
    depth_key = ("kwargs", "depth")  # timm's VisionTransformer and its kin take depth=
    download_keys = ("pretrained", "pretrained_cfg_overlay")

    def _backbone(self, library: ModuleType, name: str, kwargs: dict[str, Any]) -> nn.Module:
        try:
            backbone: nn.Module = library.create_model(
                name, pretrained=False, num_classes=0, **kwargs
            )
        except (RuntimeError, ValueError, TypeError) as e:
            raise SourceError(f"timm:{name}: {e}") from None
        return backbone


class TorchvisionNet(_NamedArchitecture):
    """A torchvision classification architecture by name (``torchvision.models.get_model``,
    random weights); its last Linear layer, the classifier, is removed."""

    family = "torchvision"
    package = "torchvision"
    download_keys = ("weights", "weights_backbone")

    def _backbone(self, library: ModuleType, name: str, kwargs: dict[str, Any]) -> nn.Module:
        try:
            backbone: nn.Module = library.models.get_model(name, weights=None, **kwargs)
        except (ValueError, TypeError) as e:
            raise SourceError(f"torchvision:{name}: {e}") from None
        _drop_classifier_(backbone, f"torchvision:{name}")
        return backbone


def _drop_classifier_(model: nn.Module, where: str) -> None:
    """Replace the last Linear layer (torchvision's classifiers: ``fc``, ``classifier[-1]``,
    ``heads.head``) by an identity, so the model returns its pooled features."""
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise SourceError(f"{where}: no Linear classifier to replace by Fovea's head")
    parent_name, _, attr = last[-1].rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, attr, nn.Identity())


ADAPTERS: dict[str, Callable[..., FundusNet]] = {
    "module": ModuleNet,
    "hf": HFNet,
    "timm": TimmNet,
    "torchvision": TorchvisionNet,
}
"""Adapter families, keyed by source kind."""
