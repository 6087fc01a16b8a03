"""Recovery distillation, shared by every step, and the plain ``distill`` step kind."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from models.nets import FundusNet
from server.compress.steps import StepContext, StepResult, StepSettings, register_step
from server.distill import DistillConfig, FitResult, Trainer
from server.training import pick_device, point_metrics, predict


def recovery_config(
    context: StepContext, *, epochs: int | None = None, lr: float | None = None
) -> DistillConfig:
    """The run's base distillation settings with this step's epochs and learning rate."""
    base = context.distill
    update: dict[str, object] = {}
    if epochs is not None:
        update["epochs"] = epochs
    if lr is not None:
        update["lr"] = lr
    return base.model_copy(update={"train": base.train.model_copy(update=update)})


def distill_into(
    student: FundusNet,
    teacher: FundusNet | None,
    context: StepContext,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    subdir: str = "train",
    config: DistillConfig | None = None,
) -> FitResult:
    """Distill ``teacher`` into ``student`` (in place) with the run's settings.

    Training state goes to ``context.out_dir / subdir``, so an interrupted step resumes its
    epochs; ``config`` replaces the settings entirely when given.
    """
    cfg = config or recovery_config(context, epochs=epochs, lr=lr)
    out: Path = context.out_dir / subdir
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        cfg, student, teacher, context.data, out, report=context.report, log=context.log
    )
    return trainer.fit()


def evaluate(model: FundusNet, context: StepContext) -> dict[str, float]:
    """Validation point metrics of ``model``."""
    device = pick_device(context.distill.train.device)
    return point_metrics(predict(model, context.data.val, context.data.spec, device=device))


class DistillSettings(StepSettings):
    """Settings of a plain ``distill`` step."""

    epochs: int | None = Field(None, ge=1)
    """Default: the run's ``distill.train.epochs``."""
    lr: float | None = Field(None, gt=0)
    teacher: Literal["original", "previous"] = "original"
    """Learn from the run's teacher, or from a frozen copy of the model as it came in."""


@register_step("distill", DistillSettings)
def distill_step(model: FundusNet, context: StepContext, settings: DistillSettings) -> StepResult:
    """Distill into ``model`` from the original teacher or its own previous state."""
    import copy

    teacher = context.teacher if settings.teacher == "original" else copy.deepcopy(model).eval()
    fit = distill_into(model, teacher, context, epochs=settings.epochs, lr=settings.lr)
    return StepResult(model=fit.student, metrics=evaluate(fit.student, context))
