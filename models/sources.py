"""Where a model comes from: source strings such as ``hf:configs/vit.json``, parsed torch-free.

``fovea:NAME`` (or a bare ``NAME``) is one of Fovea's families or presets; ``module:pkg.mod:fn``
the user's own factory of an ``nn.Module`` backbone; ``hf:CONFIG_OR_DIR`` a Hugging Face
transformers image model built from a local config; ``timm:NAME`` and ``torchvision:NAME``
their architectures (random weights); ``onnx:PATH`` an ONNX model, as a teacher only. Parsing
checks the spelling and that the needed package is installed; the networks are built by
:func:`models.nets.build_model`.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

SOURCE_KINDS: dict[str, str] = {
    "fovea": "a Fovea family or preset, e.g. fovea:resnet-student",
    "module": "your own factory of an nn.Module, e.g. module:mypkg.nets:make_backbone",
    "hf": "a Hugging Face transformers config (JSON file or directory), e.g. hf:vit-tiny.json",
    "timm": "a timm architecture, e.g. timm:resnet18 (the timm extra)",
    "torchvision": "a torchvision architecture, e.g. torchvision:resnet18 (the torchvision extra)",
    "onnx": "an ONNX model file, as a teacher only, e.g. onnx:teacher.onnx",
}
"""Every source kind, with what it names."""

TEACHER_ONLY = frozenset({"onnx"})
"""Kinds that cannot be trained (no weights in torch), so never a student."""

_EXTRAS: dict[str, tuple[str, str]] = {
    "hf": ("transformers", "hf"),
    "timm": ("timm", "timm"),
    "torchvision": ("torchvision", "torchvision"),
    "onnx": ("onnxruntime", "server"),
}
"""Kind -> (the package it imports, the fovea-edge extra that installs it)."""

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SourceError(ValueError):
    """A model source that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class ModelSource:
    """A parsed source string: its kind and what it names (``text`` is the string as given)."""

    kind: str
    target: str
    text: str

    @property
    def module(self) -> str:
        """For ``module:``: the dotted module path."""
        return self.target.rpartition(":")[0]

    @property
    def factory(self) -> str:
        """For ``module:``: the factory's name inside the module."""
        return self.target.rpartition(":")[2]


def missing_extra(kind: str) -> str | None:
    """Why ``kind`` cannot be built here (its package is not installed), or None."""
    if kind not in _EXTRAS:
        return None
    if importlib.util.find_spec(_EXTRAS[kind][0]) is not None:
        return None
    return extra_message(kind)


def extra_message(kind: str, detail: str = "") -> str:
    """What to install for ``kind`` (with ``detail``, why the installed one does not work)."""
    package, extra = _EXTRAS[kind]
    why = f"{package} cannot be imported ({detail})" if detail else f"{package} is not installed"
    return (
        f"{kind}: models need {package}, but {why}; install the {extra} extra: "
        f"pip install 'fovea-edge[{extra}]'"
    )


def parse_source(text: str) -> ModelSource:
    """Parse ``text`` into a :class:`ModelSource` (a bare name is ``fovea:``).

    Raises :class:`SourceError` with one clear message for an unknown kind (naming the known
    ones), a missing package, or a malformed module path or factory.
    """
    text = text.strip()
    kind, sep, target = text.partition(":")
    if not sep:
        kind, target = "fovea", text
    if kind not in SOURCE_KINDS:
        known = "; ".join(f"{k}: ({v})" for k, v in SOURCE_KINDS.items())
        raise SourceError(f"unknown model source kind {kind!r} in {text!r}; known kinds: {known}")
    if not target:
        raise SourceError(f"model source {text!r} names nothing after '{kind}:'")
    if kind == "module":
        _check_module_target(text, target)
    missing = missing_extra(kind)
    if missing:
        raise SourceError(missing)
    return ModelSource(kind=kind, target=target, text=text)


def _check_module_target(text: str, target: str) -> None:
    module, sep, factory = target.rpartition(":")
    if not sep or not _DOTTED.match(module):
        raise SourceError(
            f"model source {text!r}: expected module:package.module:factory, with a dotted "
            f"Python module path (got {module or target!r})"
        )
    if not _IDENT.match(factory):
        raise SourceError(
            f"model source {text!r}: the factory {factory!r} is not a Python name; expected "
            "module:package.module:factory"
        )


_FAMILY_PACKAGES: dict[str, str] = {
    "hf": "transformers",
    "timm": "timm",
    "torchvision": "torchvision",
}


def required_packages(family: str, config: dict[str, object]) -> tuple[str, ...]:
    """The Python packages beyond Fovea's own that rebuilding a ``family`` model needs in
    torch (``module``: the factory's top-level package, when it is not Fovea's)."""
    if family in _FAMILY_PACKAGES:
        return (_FAMILY_PACKAGES[family],)
    if family == "module":
        top = str(config.get("factory", "")).partition(":")[0].split(".")[0]
        if top and top not in ("models", "server", "edge_agent", "deploy"):
            return (top,)
    return ()


def missing_packages(packages: tuple[str, ...] | list[str]) -> list[str]:
    """Those of ``packages`` this Python cannot import (found without importing them)."""
    return [p for p in packages if importlib.util.find_spec(p) is None]
