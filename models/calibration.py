"""Calibrated referral scores and the screening operating point.

:func:`fit_temperature` fits one temperature T > 0 to a model's referral score on validation:
the calibrated P(refer) is ``sigmoid(logit(P(refer)) / T)``, T minimising the negative
log-likelihood of the referral truth (temperature scaling of the referral decision's logit).
That map is monotone, so a threshold set on calibrated probabilities refers exactly the eyes
that the same threshold mapped back to the raw score refers: the bundle, the device, federated
evaluation and on-device validation keep applying ``referral_threshold`` to the raw score they
already compute, and the calibrated threshold and T travel beside it for reading and reporting.

:func:`choose_operating_point` sets the threshold at the task's target sensitivity and reports
the specificity it costs against the task's floor. Rule when the floor is missed: the threshold
keeps the sensitivity target (a screening programme's first duty is not to miss referable
disease) and the point carries a warning naming the specificity reached and the floor.
:func:`reliability` bins a probability against what happened and gives the expected calibration
error (ECE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from models.task import TaskSpec

ECE_BINS = 15
"""Equal-width bins over [0, 1] for the reliability diagram and ECE."""
T_RANGE = (0.05, 20.0)
"""The temperatures :func:`fit_temperature` searches between."""


def _labelled(task: TaskSpec, labels: np.ndarray, gradable: np.ndarray | None) -> np.ndarray:
    y = np.asarray(labels)
    known = np.ones(len(y), bool) if task.kind == "multilabel" else y >= 0
    return known & (np.asarray(gradable, bool) if gradable is not None else True)


_EPS = 1e-12


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def calibrate(score: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated P(refer): ``sigmoid(logit(score) / temperature)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return np.asarray(1.0 / (1.0 + np.exp(-_logit(score) / temperature)))


def uncalibrate(probability: float, temperature: float) -> float:
    """The raw score whose calibrated value is ``probability`` (the inverse of
    :func:`calibrate`)."""
    z = float(_logit(np.asarray(probability))) * temperature
    return float(1.0 / (1.0 + np.exp(-z)))


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean Bernoulli negative log-likelihood of ``y`` (0/1) under logits ``z``, stably."""
    return float((np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1.0 - y)).mean())


def fit_temperature(
    task: TaskSpec,
    class_logits: np.ndarray,
    labels: np.ndarray,
    gradable: np.ndarray | None = None,
) -> float:
    """The temperature T minimising the NLL of the referral truth under
    ``sigmoid(logit(P(refer)) / T)`` over the labelled (and, with ``gradable``, gradable)
    images; 1.0 when they are all one class or there are none."""
    task.check_labels(labels)
    keep = _labelled(task, labels, gradable)
    z = _logit(task.referral_score(np.asarray(class_logits)[keep]))
    y = task.is_referable(np.asarray(labels)[keep]).astype(np.float64)
    if len(y) == 0 or y.min() == y.max():
        return 1.0
    best = minimize_scalar(
        lambda log_t: _nll(z / np.exp(log_t), y),
        bounds=(np.log(T_RANGE[0]), np.log(T_RANGE[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(best.x))


@dataclass(frozen=True)
class Reliability:
    """A probability binned against what happened: the reliability diagram's data and ECE."""

    edges: tuple[float, ...]
    """Bin edges over [0, 1] (``bins + 1`` values)."""
    confidence: tuple[float, ...]
    """Mean predicted probability per bin (NaN for an empty bin)."""
    observed: tuple[float, ...]
    """Observed frequency of the event per bin (NaN for an empty bin)."""
    counts: tuple[int, ...]
    ece: float
    """Expected calibration error: sum over bins of (count / N) x |observed - confidence|."""

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping for JSON (NaN as ``None``)."""

        def clean(v: tuple[float, ...]) -> list[float | None]:
            return [None if np.isnan(x) else float(x) for x in v]

        return {
            "ece": self.ece,
            "edges": list(self.edges),
            "confidence": clean(self.confidence),
            "observed": clean(self.observed),
            "counts": list(self.counts),
        }


def reliability(probability: np.ndarray, outcome: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Bin ``probability`` (of an event) into ``bins`` equal-width bins and compare each bin's
    mean probability with how often ``outcome`` (0/1) happened in it."""
    p = np.asarray(probability, dtype=np.float64).reshape(-1)
    o = np.asarray(outcome, dtype=np.float64).reshape(-1)
    if p.shape != o.shape:
        raise ValueError(f"probability and outcome differ in length: {p.shape} vs {o.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bins are [a, b) except the last, which holds 1.0
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=p, minlength=bins) / counts
        seen = np.bincount(which, weights=o, minlength=bins) / counts
    n = max(len(p), 1)
    gaps = np.where(counts > 0, np.abs(seen - conf), 0.0)
    ece = float((counts / n * gaps).sum())
    return Reliability(
        edges=tuple(float(e) for e in edges),
        confidence=tuple(float(c) for c in conf),
        observed=tuple(float(s) for s in seen),
        counts=tuple(int(c) for c in counts),
        ece=ece,
    )


def referral_reliability(
    task: TaskSpec,
    class_logits: np.ndarray,
    labels: np.ndarray,
    *,
    temperature: float = 1.0,
    gradable: np.ndarray | None = None,
    bins: int = ECE_BINS,
) -> Reliability:
    """:func:`reliability` of P(refer) calibrated at ``temperature`` (1.0: the raw score)
    against the referral rule's truth, over the labelled (and gradable) images."""
    keep = _labelled(task, labels, gradable)
    score = calibrate(task.referral_score(np.asarray(class_logits)[keep]), temperature)
    truth = task.is_referable(np.asarray(labels)[keep])
    return reliability(score, truth, bins)


@dataclass(frozen=True)
class OperatingPoint:
    """The referral threshold, and what it reached on validation."""

    threshold: float
    """On the raw P(refer) that every consumer computes from the class logits."""
    temperature: float
    target_sensitivity: float
    specificity_floor: float
    sensitivity: float
    """Validation sensitivity at ``threshold`` (NaN without referable images)."""
    specificity: float
    """Validation specificity at ``threshold`` (NaN without non-referable images)."""

    @property
    def calibrated_threshold(self) -> float:
        """The threshold on calibrated P(refer) (the same eyes referred)."""
        return float(calibrate(np.asarray(self.threshold), self.temperature))

    @property
    def warning(self) -> str | None:
        """Why this point falls short of the task's floor, or ``None`` when it does not."""
        if np.isnan(self.specificity) or self.specificity >= self.specificity_floor:
            return None
        return (
            f"target sensitivity {self.target_sensitivity:.2f} reached only at specificity "
            f"{self.specificity:.3f} < floor {self.specificity_floor:.2f} (validation); the "
            "threshold keeps the sensitivity target"
        )

    def as_dict(self) -> dict[str, Any]:
        """The point as export.json's ``operating_point`` writes it."""

        def num(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            "referral_threshold": self.threshold,
            "calibrated_threshold": self.calibrated_threshold,
            "temperature": self.temperature,
            "target_sensitivity": self.target_sensitivity,
            "specificity_floor": self.specificity_floor,
            "validation_sensitivity": num(self.sensitivity),
            "validation_specificity": num(self.specificity),
            "warning": self.warning,
        }


def choose_operating_point(
    task: TaskSpec,
    class_logits: np.ndarray,
    labels: np.ndarray,
    *,
    temperature: float = 1.0,
    sensitivity: float | None = None,
    gradable: np.ndarray | None = None,
) -> OperatingPoint:
    """The highest threshold on P(refer) that reaches ``sensitivity`` (default: the task's
    ``referral.target_sensitivity``) on these labelled eyes, with the specificity it leaves
    against ``referral.specificity_floor``; ``temperature`` (from :func:`fit_temperature`)
    gives its calibrated reading. Pass validation data only."""
    target = task.referral.target_sensitivity if sensitivity is None else sensitivity
    if not 0 < target < 1:
        raise ValueError(f"target sensitivity must be in (0, 1), got {target}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    task.check_labels(labels)
    keep = _labelled(task, labels, gradable)
    score = task.referral_score(np.asarray(class_logits)[keep])
    truth = task.is_referable(np.asarray(labels)[keep])
    positives = np.sort(score[truth])[::-1]
    if len(positives) == 0:
        threshold = 0.5
    else:
        threshold = float(positives[int(np.ceil(target * len(positives))) - 1])
    refer = score >= threshold
    with np.errstate(invalid="ignore"):
        sens = float(refer[truth].mean()) if truth.any() else float("nan")
        spec = float((~refer[~truth]).mean()) if (~truth).any() else float("nan")
    return OperatingPoint(
        threshold=threshold,
        temperature=float(temperature),
        target_sensitivity=float(target),
        specificity_floor=task.referral.specificity_floor,
        sensitivity=sens,
        specificity=spec,
    )


POINT_METRICS = ("referral_threshold", "temperature", "target_sensitivity", "specificity_floor")
"""The operating point's values a checkpoint's ``metrics`` carry (beside the validation
``referable_sensitivity`` and ``referable_specificity`` at that threshold)."""


def point_metrics(point: OperatingPoint) -> dict[str, float]:
    """The point as the floats a checkpoint's ``metrics`` hold (:data:`POINT_METRICS`)."""
    return {
        "referral_threshold": point.threshold,
        "temperature": point.temperature,
        "target_sensitivity": point.target_sensitivity,
        "specificity_floor": point.specificity_floor,
    }


def point_from_metrics(metrics: dict[str, float], task: TaskSpec) -> OperatingPoint:
    """The operating point a checkpoint's ``metrics`` record; a checkpoint made before
    calibration reads as temperature 1.0 at ``task``'s target and floor (threshold 0.5 if
    it has none)."""
    nan = float("nan")
    return OperatingPoint(
        threshold=float(metrics.get("referral_threshold", 0.5)),
        temperature=float(metrics.get("temperature", 1.0)),
        target_sensitivity=float(
            metrics.get("target_sensitivity", task.referral.target_sensitivity)
        ),
        specificity_floor=float(metrics.get("specificity_floor", task.referral.specificity_floor)),
        sensitivity=float(metrics.get("referable_sensitivity", nan)),
        specificity=float(metrics.get("referable_specificity", nan)),
    )
