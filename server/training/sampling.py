"""Class-balanced sampling: rare grades drawn more often, reproducibly, shardable across ranks."""

from __future__ import annotations

import numpy as np


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
