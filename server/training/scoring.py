"""Scoring a run's models: the referral operating point, metrics with intervals, comparisons."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from models import (
    Predictions,
    PreprocessSpec,
    operating_point,
    paired_difference,
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


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """How to score: the operating-point rule, bootstrap size and seed, where to run."""

    sensitivity: float | None = 0.9
    resamples: int = 1000
    seed: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))


def score_model(
    model: FundusNet,
    splits: dict[str, FundusArrays | None],
    spec: PreprocessSpec,
    opts: ScoreOptions,
) -> Scored:
    """Predict every split; fix the referral threshold on ``val``; score with 95% intervals.

    With ``opts.sensitivity`` set, the threshold is the highest one that reaches that referable
    sensitivity on validation (how screening programmes set an operating point); else 0.5.
    """
    raw = {
        k: predict(model, v, spec, device=opts.device) for k, v in splits.items() if v is not None
    }
    threshold = operating_point(raw["val"], opts.sensitivity) if opts.sensitivity else 0.5
    preds = {k: dataclasses.replace(p, referral_threshold=threshold) for k, p in raw.items()}
    entry: dict[str, Any] = {"parameters": count_parameters(model), "referral_threshold": threshold}
    for k, p in preds.items():
        entry[k] = metrics_json(screening_metrics(p, resamples=opts.resamples, seed=opts.seed))
    return Scored(preds, entry)


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
