"""Screening metrics with bootstrap confidence intervals, plain and paired.

:func:`screening_metrics` and :func:`paired_difference` give the headline metrics of a
:class:`Predictions`' task; :func:`task_metrics` and :func:`task_operating_point` score any
:class:`~models.task.TaskSpec` with every metric its kind calls for (per-class recall, per-label
AUC).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.task import DR_GRADING, NUM_GRADES, TaskSpec, gradable_probability

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
    """The class logits (for DR, the grades'): N x the task's class-output width."""
    gradable_logit: np.ndarray | None
    """The quality logit per image; ``None`` when the task has no quality head."""
    grade: np.ndarray
    """The labels: class indices (-1 unknown), or N x L 0/1 for ``multilabel``."""
    gradable: np.ndarray
    referral_threshold: float = 0.5
    task: TaskSpec = DR_GRADING

    def __post_init__(self) -> None:
        n = len(self.grade)
        (width,) = self.task.output_shapes()[self.task.outputs.classes]
        if self.grade_logits.shape != (n, width):
            raise ValueError(
                f"task {self.task.name}: class logits must be ({n}, {width}), got "
                f"{self.grade_logits.shape}"
            )
        if self.gradable.shape != (n,):
            raise ValueError("gradable must have one value per image")
        if self.task.quality_head and (
            self.gradable_logit is None or self.gradable_logit.reshape(-1).shape != (n,)
        ):
            raise ValueError("gradable_logit must have one value per image")

    def quality(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(quality logits, gradable labels) when the task has a quality head."""
        if not self.task.quality_head or self.gradable_logit is None:
            return None
        return self.gradable_logit, self.gradable


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


def _weighted_kappa(
    truth: np.ndarray, pred: np.ndarray, weights: np.ndarray, k: int = NUM_GRADES
) -> np.ndarray:
    """Quadratic-weighted kappa over ``k`` ordered classes for each row of ``weights``."""
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
    """The headline metrics of ``p``'s task (:func:`headline_metrics`) and each class's recall,
    ``recall[NAME]`` (a multilabel task: each label's AUC, ``auc[NAME]``), for each resample row
    of ``weights`` (R x N counts; ones = the sample)."""
    if p.task.kind == "multilabel" and p.quality() is None:
        weights = weights * p.gradable  # an ungradable image's row of findings is no label
    table = task_metric_table(
        p.task, p.grade_logits, p.grade, p.referral_threshold, weights, p.quality()
    )
    names = headline_metrics(p.task)
    kind = "auc" if p.task.kind == "multilabel" else "recall"
    names += tuple(f"{kind}[{c}]" for c in p.task.classes)
    return {k: table[k] for k in names}


def headline_metrics(task: TaskSpec) -> tuple[str, ...]:
    """The metrics a task is judged by: for DR grading :data:`METRIC_NAMES`; every kind has the
    referral rule's sensitivity, specificity and AUC, and accuracy (label-wise for
    ``multilabel``); ``grading`` adds kappa, ``multilabel`` the mean AUC over labels; a quality
    head adds gradable accuracy and the false-reject rate."""
    names = []
    for name in (*METRIC_NAMES, "mean_auc"):
        if name == "kappa" and task.kind != "grading":
            continue
        if name == "mean_auc" and task.kind != "multilabel":
            continue
        if name in ("gradable_accuracy", "false_reject_rate") and not task.quality_head:
            continue
        names.append(name)
    return tuple(names)


def operating_point(p: Predictions, sensitivity: float) -> float:
    """The highest referral threshold on P(refer) that reaches ``sensitivity``."""
    gradable = p.gradable if p.task.quality_head else None
    return task_operating_point(p.task, p.grade_logits, p.grade, sensitivity, gradable)


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
    return {k: _interval(float(point[k][0]), boot[k]) for k in point}


def paired_difference(
    a: Predictions, b: Predictions, *, resamples: int = 1000, seed: int = 0
) -> dict[str, Estimate]:
    """Metric(a) - metric(b) on the same images, with a paired bootstrap 95% interval."""
    if not (np.array_equal(a.grade, b.grade) and np.array_equal(a.gradable, b.gradable)):
        raise ValueError("paired comparison needs predictions on the same labelled images")
    if a.task != b.task:
        raise ValueError(f"paired comparison of task {a.task.name} with task {b.task.name}")
    n = len(a.grade)
    ones = np.ones((1, n), dtype=np.float32)
    pa, pb = metric_table(a, ones), metric_table(b, ones)
    w = _resample_weights(n, resamples, seed)
    ba, bb = metric_table(a, w), metric_table(b, w)
    return {k: _interval(float(pa[k][0] - pb[k][0]), ba[k] - bb[k]) for k in pa}


# ------------------------------------------------------------------------------ any task
def _labelled(spec: TaskSpec, labels: np.ndarray, gradable: np.ndarray | None) -> np.ndarray:
    y = np.asarray(labels)
    known = np.ones(len(y), bool) if spec.kind == "multilabel" else y >= 0
    return known & (np.asarray(gradable, bool) if gradable is not None else True)


def task_metric_table(
    spec: TaskSpec,
    class_logits: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    weights: np.ndarray,
    gradable: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The task's metrics for each resample row of ``weights`` (R x N counts).

    Every kind: sensitivity, specificity and AUC of the referral rule at ``threshold``. Single
    label kinds: accuracy and recall per class (``recall[NAME]``); ``grading`` adds quadratic
    kappa; ``multilabel``: AUC per label (``auc[NAME]``), their mean, and label-wise (Hamming)
    accuracy at P >= 0.5 over the labelled images. ``gradable``, as
    (quality logits, gradable labels), adds gradable accuracy and the false-reject rate.
    """
    spec.check_labels(labels)
    y = np.asarray(labels)
    quality, said = (None, None) if gradable is None else gradable
    labelled = _labelled(spec, y, said)
    sub = labelled.nonzero()[0]
    probs = spec.probabilities(class_logits)
    score = spec.referral_from(probs)
    truth_ref = spec.is_referable(y)
    wl = weights * labelled
    pos, neg = wl * truth_ref, wl * ~truth_ref
    refer = score >= threshold
    out = {
        "referable_sensitivity": _ratio((pos * refer).sum(1), pos.sum(1)),
        "referable_specificity": _ratio((neg * ~refer).sum(1), neg.sum(1)),
        "referable_auc": _weighted_auc(score[sub], truth_ref[sub], weights[:, sub]),
    }
    if spec.kind == "multilabel":
        aucs = [
            _weighted_auc(probs[sub, i], y[sub, i].astype(bool), weights[:, sub])
            for i in range(spec.num_classes)
        ]
        out.update({f"auc[{c}]": a for c, a in zip(spec.classes, aucs, strict=True)})
        out["mean_auc"] = np.nanmean(np.stack(aucs), axis=0)
        hits = ((probs >= 0.5) == y.astype(bool)).mean(1)
        out["accuracy"] = _ratio((wl * hits).sum(1), wl.sum(1))
    else:
        pred = probs.argmax(1)
        out["accuracy"] = _ratio((wl * (pred == y)).sum(1), wl.sum(1))
        for i, c in enumerate(spec.classes):
            cls = wl * (y == i)
            out[f"recall[{c}]"] = _ratio((cls * (pred == i)).sum(1), cls.sum(1))
        if spec.kind == "grading":
            out["kappa"] = _weighted_kappa(y[sub], pred[sub], weights[:, sub], spec.num_classes)
    if quality is not None and said is not None:
        ok = gradable_probability(quality) >= 0.5
        wg = weights * said
        out["gradable_accuracy"] = _ratio((weights * (ok == said)).sum(1), weights.sum(1))
        out["false_reject_rate"] = _ratio((wg * ~ok).sum(1), wg.sum(1))
    return out


def task_metrics(
    spec: TaskSpec,
    class_logits: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    *,
    gradable: tuple[np.ndarray, np.ndarray] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """:func:`task_metric_table` with a 95% bootstrap interval per metric."""
    n = len(labels)
    args = (spec, class_logits, labels, threshold)
    point = task_metric_table(*args, np.ones((1, n), dtype=np.float32), gradable)
    boot = (
        task_metric_table(*args, _resample_weights(n, resamples, seed), gradable)
        if resamples
        else point
    )
    return {k: _interval(float(point[k][0]), boot[k]) for k in point}


def task_operating_point(
    spec: TaskSpec,
    class_logits: np.ndarray,
    labels: np.ndarray,
    sensitivity: float | None = None,
    gradable: np.ndarray | None = None,
) -> float:
    """The highest threshold on the referral score that reaches ``sensitivity`` (default: the
    spec's ``referral.target_sensitivity``) on these labelled eyes."""
    target = spec.referral.target_sensitivity if sensitivity is None else sensitivity
    if not 0 < target < 1:
        raise ValueError(f"target sensitivity must be in (0, 1), got {target}")
    spec.check_labels(labels)
    labelled = _labelled(spec, np.asarray(labels), gradable)
    positive = labelled & spec.is_referable(np.asarray(labels))
    scores = spec.referral_score(class_logits)[positive]
    if len(scores) == 0:
        return 0.5
    k = int(np.ceil(target * len(scores)))
    return float(np.sort(scores)[::-1][k - 1])
