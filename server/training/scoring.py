"""Scoring a run's models: calibration and the referral operating point (both fitted on
validation only), metrics with intervals, calibration error per split, comparisons."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from models import (
    OperatingPoint,
    Predictions,
    PreprocessSpec,
    choose_operating_point,
    fit_temperature,
    paired_difference,
    point_metrics,
    referral_reliability,
    screening_metrics,
)
from models.datasets import FundusArrays
from models.nets import FundusNet, count_parameters
from server.training.evaluate import metrics_json, predict

HEADLINE = (
    "accuracy",
    "referable_sensitivity",
    "referable_specificity",
    "referable_auc",
    "kappa",
    "mean_auc",
)
"""The metrics a checkpoint records and a distillation's decay compares, where the task has
them (kappa for grading, mean AUC for multilabel, accuracy for single-label kinds)."""


def headline(split_entry: dict[str, Any]) -> dict[str, float]:
    """The point values of :data:`HEADLINE` that one split's scores hold."""
    return {k: split_entry[k]["value"] for k in HEADLINE if k in split_entry}


@dataclasses.dataclass
class Scored:
    """One model's predictions per split and metrics as JSON."""

    predictions: dict[str, Predictions]
    entry: dict[str, Any]
    point: OperatingPoint | None = None
    """The operating point fitted on validation."""

    def point_metrics(self) -> dict[str, float]:
        """The point's values for a checkpoint's ``metrics`` (threshold, temperature, target
        sensitivity and specificity floor); none when unscored."""
        return point_metrics(self.point) if self.point is not None else {}


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """How to score: the operating-point rule, bootstrap size and seed, where to run."""

    sensitivity: float | Literal["task"] | None = "task"
    """The target sensitivity on validation; ``task``: the task's own; None: threshold 0.5."""
    resamples: int = 1000
    seed: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))


def score_model(
    model: FundusNet,
    splits: dict[str, FundusArrays | None],
    spec: PreprocessSpec,
    opts: ScoreOptions,
) -> Scored:
    """Predict every split; fit the temperature and fix the referral threshold on ``val``
    only; score every split with 95% intervals, and record each split's calibration error
    before and after scaling (``entry["calibration"][split]``).

    With ``opts.sensitivity`` set, the threshold is the highest one that reaches that referable
    sensitivity (``task``: the task's target) on validation (how screening programmes set an
    operating point); else 0.5.
    ``entry["operating_point"]`` holds the point, its validation specificity against the task's
    floor and a warning when the floor is not kept.
    """
    raw = {
        k: predict(model, v, spec, device=opts.device) for k, v in splits.items() if v is not None
    }
    point = validation_point(raw["val"], opts.sensitivity)
    preds = {k: dataclasses.replace(p, referral_threshold=point.threshold) for k, p in raw.items()}
    entry: dict[str, Any] = {
        "parameters": count_parameters(model),
        "referral_threshold": point.threshold,
        "temperature": point.temperature,
        "operating_point": point.as_dict(),
        "calibration": {k: calibration_json(p, point.temperature) for k, p in preds.items()},
    }
    for k, p in preds.items():
        entry[k] = metrics_json(screening_metrics(p, resamples=opts.resamples, seed=opts.seed))
    return Scored(preds, entry, point)


def _gradable(p: Predictions) -> Any:
    return p.gradable if p.task.quality_head else None


def validation_point(
    val: Predictions, sensitivity: float | Literal["task"] | None = "task"
) -> OperatingPoint:
    """The temperature and operating point fitted on validation predictions ``val`` only
    (``task``: at the task's target sensitivity; None: the threshold is 0.5)."""
    args = (val.task, val.grade_logits, val.grade)
    temperature = fit_temperature(*args, _gradable(val))
    target = sensitivity if isinstance(sensitivity, float) else None
    point = choose_operating_point(
        *args, temperature=temperature, sensitivity=target, gradable=_gradable(val)
    )
    if sensitivity is None:  # the fixed 0.5 rule, with what it reaches on validation
        fixed = dataclasses.replace(val, referral_threshold=0.5)
        m = screening_metrics(fixed, resamples=0)
        point = dataclasses.replace(
            point,
            threshold=0.5,
            sensitivity=m["referable_sensitivity"].value,
            specificity=m["referable_specificity"].value,
        )
    return point


def calibration_json(p: Predictions, temperature: float) -> dict[str, Any]:
    """Expected calibration error and reliability bins of P(refer) on ``p``'s images, raw
    (``before``) and at ``temperature`` (``after``)."""
    args = (p.task, p.grade_logits, p.grade)
    return {
        "temperature": temperature,
        "before": referral_reliability(*args, gradable=_gradable(p)).as_dict(),
        "after": referral_reliability(
            *args, temperature=temperature, gradable=_gradable(p)
        ).as_dict(),
    }


def compare(
    student: Scored, teacher: Scored, split: str, *, resamples: int, seed: int
) -> dict[str, Any]:
    """Paired student-minus-teacher intervals and the student/teacher ratio per headline metric."""
    diff = paired_difference(
        student.predictions[split], teacher.predictions[split], resamples=resamples, seed=seed
    )
    return {
        "paired": {"split": split, "student_minus_teacher": metrics_json(diff)},
        "decay": {
            k: student.entry[split][k]["value"] / max(teacher.entry[split][k]["value"], 1e-9)
            for k in headline(student.entry[split])
        },
    }
