"""Screening metrics with bootstrap confidence intervals, plain and paired."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.task import NUM_GRADES, gradable_probability, is_referable, referable_probability

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "referable_sensitivity",
    "referable_specificity",
    "referable_auc",
    "kappa",
    "gradable_accuracy",
    "false_reject_rate",
)


@dataclass(frozen=True)
class Predictions:
    """What a model said about a labelled set, with the labels."""

    grade_logits: np.ndarray
    gradable_logit: np.ndarray
    grade: np.ndarray
    gradable: np.ndarray
    referral_threshold: float = 0.5

    def __post_init__(self) -> None:
        n = len(self.grade)
        if self.grade_logits.shape != (n, NUM_GRADES):
            raise ValueError(
                f"grade_logits must be ({n}, {NUM_GRADES}), got {self.grade_logits.shape}"
            )
        if self.gradable_logit.reshape(-1).shape != (n,) or self.gradable.shape != (n,):
            raise ValueError("gradable_logit and gradable must have one value per image")


def _weighted_auc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC for each row of ``weights`` (R x N resample counts), ties counted half."""
    order = np.argsort(score, kind="stable")
    s, pos, w = score[order], positive[order], weights[:, order].astype(np.float64)
    wp, wn = w * pos, w * ~pos
    # group ties so that a tied negative counts half
    _, start = np.unique(s, return_index=True)
    group = np.searchsorted(start, np.arange(len(s)), side="right") - 1
    neg_group = np.zeros((w.shape[0], len(start)))
    np.add.at(neg_group.T, group, wn.T)
    neg_below = np.cumsum(neg_group, axis=1) - neg_group
    credit = neg_below[:, group] + 0.5 * neg_group[:, group]
    num = (wp * credit).sum(1)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _weighted_kappa(truth: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Quadratic-weighted kappa for each row of ``weights``."""
    k = NUM_GRADES
    r = weights.shape[0]
    cell = truth * k + pred
    flat = np.zeros((r, k * k))
    for c in range(k * k):
        flat[:, c] = weights[:, cell == c].sum(1)
    conf = flat.reshape(r, k, k)
    total = conf.sum((1, 2), keepdims=True)
    expected = conf.sum(2, keepdims=True) * conf.sum(1, keepdims=True) / np.maximum(total, 1)
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = (i - j) ** 2 / (k - 1) ** 2
    obs = (w * conf).sum((1, 2))
    exp = (w * expected).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(exp > 0, 1.0 - obs / exp, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


def metric_table(p: Predictions, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each resample row of ``weights`` (R x N counts; ones = the sample)."""
    labelled = p.gradable & (p.grade >= 0)
    pred = p.grade_logits.argmax(1)
    p_ref = referable_probability(p.grade_logits)
    truth_ref = is_referable(p.grade)
    pred_ref = p_ref >= p.referral_threshold
    wl = weights * labelled
    pos, neg = wl * truth_ref, wl * ~truth_ref
    said_gradable = gradable_probability(p.gradable_logit) >= 0.5
    wg = weights * p.gradable
    sub = labelled.nonzero()[0]
    return {
        "accuracy": _ratio((wl * (pred == p.grade)).sum(1), wl.sum(1)),
        "referable_sensitivity": _ratio((pos * pred_ref).sum(1), pos.sum(1)),
        "referable_specificity": _ratio((neg * ~pred_ref).sum(1), neg.sum(1)),
        "referable_auc": _weighted_auc(p_ref[sub], truth_ref[sub], weights[:, sub]),
        "kappa": _weighted_kappa(p.grade[sub], pred[sub], weights[:, sub]),
        "gradable_accuracy": _ratio(
            (weights * (said_gradable == p.gradable)).sum(1), weights.sum(1)
        ),
        "false_reject_rate": _ratio((wg * ~said_gradable).sum(1), wg.sum(1)),
    }


def operating_point(p: Predictions, sensitivity: float) -> float:
    """The highest referral threshold on P(referable) that reaches ``sensitivity``."""
    if not 0 < sensitivity < 1:
        raise ValueError(f"target sensitivity must be in (0, 1), got {sensitivity}")
    labelled = p.gradable & (p.grade >= 0)
    scores = referable_probability(p.grade_logits)[labelled & is_referable(p.grade)]
    if len(scores) == 0:
        return 0.5
    # the k-th highest positive score, k = ceil(sensitivity * positives)
    k = int(np.ceil(sensitivity * len(scores)))
    return float(np.sort(scores)[::-1][k - 1])


@dataclass(frozen=True)
class Estimate:
    """A point value and its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        """Plain mapping for JSON."""
        return asdict(self)


def _resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)


def _interval(point: float, samples: np.ndarray) -> Estimate:
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return Estimate(point, float("nan"), float("nan"))
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi))


def screening_metrics(
    p: Predictions, *, resamples: int = 1000, seed: int = 0
) -> dict[str, Estimate]:
    """Every screening metric with a 95% bootstrap interval (percentile method)."""
    n = len(p.grade)
    point = metric_table(p, np.ones((1, n), dtype=np.float32))
    boot = metric_table(p, _resample_weights(n, resamples, seed)) if resamples else point
    return {k: _interval(float(point[k][0]), boot[k]) for k in METRIC_NAMES}


def paired_difference(
    a: Predictions, b: Predictions, *, resamples: int = 1000, seed: int = 0
) -> dict[str, Estimate]:
    """Metric(a) - metric(b) on the same images, with a paired bootstrap 95% interval."""
    if not (np.array_equal(a.grade, b.grade) and np.array_equal(a.gradable, b.gradable)):
        raise ValueError("paired comparison needs predictions on the same labelled images")
    n = len(a.grade)
    ones = np.ones((1, n), dtype=np.float32)
    pa, pb = metric_table(a, ones), metric_table(b, ones)
    w = _resample_weights(n, resamples, seed)
    ba, bb = metric_table(a, w), metric_table(b, w)
    return {k: _interval(float(pa[k][0] - pb[k][0]), ba[k] - bb[k]) for k in METRIC_NAMES}
