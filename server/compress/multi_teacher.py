"""The ``multi_teacher`` step: distil from several teachers, routed or averaged (or compared).

The routing itself is a distillation feature (:mod:`server.distill.routing`); this module makes
it a step of a compression pipeline.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from models.nets import FundusNet, load_checkpoint
from server.compress.steps import StepContext, StepResult, StepSettings, register_step
from server.distill import MultiTeacherOutcome, RouterConfig, distil_multi_teacher


class MultiTeacherSettings(StepSettings):
    """``multi_teacher`` step settings."""

    teachers: list[Path] = Field(min_length=1)
    """Teacher checkpoints (for example one per site or camera)."""
    mode: Literal["routed", "averaged", "compare"] = "routed"
    """``compare`` distils both ways from the same start and keeps the better on validation."""
    epochs: int | None = Field(None, ge=1)
    """Distillation epochs (default: the run's ``train.epochs``)."""
    router_epochs: int = Field(3, ge=1)
    router_balance: float = Field(0.1, ge=0)
    """Weight of the router's load-balancing term (see :class:`RouterConfig`)."""


@register_step("multi_teacher", MultiTeacherSettings)
def multi_teacher_step(
    model: FundusNet, context: StepContext, settings: MultiTeacherSettings
) -> StepResult:
    """Distil the input model from several teachers, routed or averaged (or both, compared)."""
    teachers = [load_checkpoint(p)[0] for p in settings.teachers]
    cfg = context.distill
    if settings.epochs:
        cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"epochs": settings.epochs})}
        )
    modes: list[Literal["routed", "averaged"]] = (
        ["routed", "averaged"] if settings.mode == "compare" else [settings.mode]
    )
    router = RouterConfig(
        epochs=settings.router_epochs, seed=cfg.seed, balance=settings.router_balance
    )
    results: dict[str, MultiTeacherOutcome] = {}
    for mode in modes:
        start = copy.deepcopy(model) if len(modes) > 1 else model
        results[mode] = distil_multi_teacher(
            start, teachers, context.data, cfg, mode=mode, router=router
        )
        context.log(f"multi_teacher {mode}: val accuracy {results[mode].val['accuracy']:.3f}")
    best = max(results.values(), key=lambda r: (r.val["accuracy"], r.val.get("kappa", 0.0)))
    details: dict[str, Any] = {
        m: {"val": r.val, "teacher_val": r.teacher_val, "mean_weights": r.mean_weights}
        for m, r in results.items()
    }
    details["chosen"] = best.mode
    return StepResult(model=best.student, metrics=best.val, details=details)
