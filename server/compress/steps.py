"""The step interface of ``fovea compress``: one function per step kind, a registry behind them.

A step takes the current model and returns a (usually smaller) model that has been distilled to
recover. Each kind registers itself with its own settings model::

    class PruneHeadsSettings(StepSettings):
        keep_ratio: float = 0.6

    @register_step("prune_heads", PruneHeadsSettings)
    def prune_heads_step(model, context, settings) -> StepResult: ...

``run_step(kind, model, context, settings)`` finds the kind (importing its module on first use)
and runs it. Steps write their files under ``context.out_dir`` only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from models.datasets import FundusArrays
from models.nets import FundusNet
from server.distill import DistillConfig
from server.training import Reporter, TrainingData

Log = Callable[[str], None]


class StepSettings(BaseModel):
    """Base of every step kind's settings (the keys of its YAML entry besides ``kind``)."""

    model_config = ConfigDict(extra="forbid")


S = TypeVar("S", bound=StepSettings)


@dataclass
class StepContext:
    """What a step may use besides the model it is given."""

    data: TrainingData
    """Preprocessing spec, training images and the validation split (choose and stop on this)."""
    teacher: FundusNet | None
    """The run's original teacher (frozen, eval mode); None when the run has none."""
    distill: DistillConfig
    """Base settings for every recovery distillation (loss, train, augment, monitor, seed)."""
    out_dir: Path
    """This step's own directory (exists); put files and resumable training state here."""
    log: Log = print
    report: Reporter | None = None
    test: FundusArrays | None = None
    """The unseen site (report only: never choose anything on it)."""
    teacher_path: Path | None = None
    teacher_parameters: int | None = None


@dataclass
class StepResult:
    """What a step hands to the next one and to the report."""

    model: FundusNet
    """The step's output model (the next step's input)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Validation point metrics of ``model`` (``server.training.evaluate.point_metrics``)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Anything JSON-able the report should show (sub-step curve, kept heads, decay ...)."""
    artifacts: dict[str, Path] = field(default_factory=dict)
    """Files the step wrote that later stages use (e.g. ``{"qat_onnx": ...}``)."""
    curve: list[dict[str, Any]] = field(default_factory=list)
    """Points for the compression curve: dicts with ``label``, ``parameters``, ``accuracy`` and
    optionally ``latency_ms``, one per sub-step (empty: the report uses the step's output)."""


StepFn = Callable[[FundusNet, StepContext, Any], StepResult]


@dataclass(frozen=True)
class StepKind(Generic[S]):
    """A registered kind: its settings model and its function."""

    name: str
    settings: type[S]
    fn: Callable[[FundusNet, StepContext, S], StepResult]


_REGISTRY: dict[str, StepKind[Any]] = {}

BUILTIN_MODULES: dict[str, str] = {
    "distill": "server.compress.recovery",
    "reduce_layers": "server.compress.layers",
    "prune_channels": "server.compress.channels",
    "qat": "server.compress.qat",
    "prune_heads": "server.compress.heads",
    "assistant_chain": "server.compress.assistants",
    "multi_teacher": "server.compress.multi_teacher",
}
"""Where each built-in kind lives; the module registers it when imported."""


def register_step(
    kind: str, settings: type[S]
) -> Callable[[Callable[[FundusNet, StepContext, S], StepResult]], Any]:
    """Decorator: make ``fn`` the step of ``kind`` with ``settings`` as its settings model."""

    def wrap(
        fn: Callable[[FundusNet, StepContext, S], StepResult],
    ) -> Callable[[FundusNet, StepContext, S], StepResult]:
        _REGISTRY[kind] = StepKind(kind, settings, fn)
        return fn

    return wrap


def step_kind(kind: str) -> StepKind[Any]:
    """The registered kind ``kind`` (importing its built-in module on first use)."""
    if kind not in _REGISTRY and kind in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[kind])
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted({*BUILTIN_MODULES, *_REGISTRY}))
        raise ValueError(f"unknown compression step kind {kind!r}; known: {known}") from None


def parse_settings(kind: str, data: dict[str, Any]) -> StepSettings:
    """``data`` validated into ``kind``'s settings model (unknown keys are errors)."""
    return step_kind(kind).settings.model_validate(data)


def run_step(
    kind: str, model: FundusNet, context: StepContext, settings: StepSettings | dict[str, Any]
) -> StepResult:
    """Run step ``kind`` on ``model``; ``settings`` may be a mapping (validated here)."""
    spec = step_kind(kind)
    if not isinstance(settings, spec.settings):
        data = settings if isinstance(settings, dict) else settings.model_dump()
        settings = spec.settings.model_validate(data)
    return spec.fn(model, context, settings)
