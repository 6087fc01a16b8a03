"""Class-balanced sampling: rare grades drawn more often, reproducibly, shardable across ranks."""

from __future__ import annotations

import numpy as np

from models import TaskSpec
from models.datasets import FundusArrays


def class_of(grade: np.ndarray, gradable: np.ndarray) -> np.ndarray:
    """Sampling class per image: the class index, or one past the last for ungradable/unknown."""
    known = gradable & (grade >= 0)
    return np.where(known, grade, int(grade.max(initial=0)) + 1)


def balanced_weights(classes: np.ndarray, power: float) -> np.ndarray:
    """Per-image sampling probability proportional to class frequency ** -power."""
    counts = np.bincount(classes, minlength=classes.max() + 1).astype(np.float64)
    w = np.where(counts[classes] > 0, counts[classes], 1.0) ** -power
    return w / w.sum()


def epoch_indices(
    classes: np.ndarray,
    power: float,
    seed: int,
    epoch: int,
    *,
    rank: int = 0,
    world: int = 1,
) -> np.ndarray:
    """One epoch of sample indices (drawn with replacement when balancing), this rank's share.

    Same (seed, epoch) gives the same indices, so a resumed run sees the same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(classes)
    if power == 0:
        order = rng.permutation(n)
    else:
        order = rng.choice(n, size=n, replace=True, p=balanced_weights(classes, power))
    usable = (n // world) * world
    return order[:usable][rank::world]


def loss_targets(arrays: FundusArrays, task: TaskSpec) -> np.ndarray:
    """The labels a loss takes: int64 class indices (-1: none), or float32 N x L findings
    (``multilabel``; a row of -1 for an ungradable or unlabelled image, which teaches nothing)."""
    if task.kind == "multilabel":
        known = (arrays.grade >= 0) & arrays.gradable
        return np.where(known[:, None], arrays.targets(task).astype(np.float32), np.float32(-1))
    return arrays.grade.astype(np.int64)


def sampling_classes(arrays: FundusArrays, task: TaskSpec) -> np.ndarray:
    """:func:`class_of` for ``task``: a multilabel task balances by the referral truth."""
    if task.kind != "multilabel":
        return class_of(arrays.grade, arrays.gradable)
    refer = task.is_referable(arrays.targets(task)).astype(np.int64)
    return class_of(np.where(arrays.grade >= 0, refer, -1), arrays.gradable)
