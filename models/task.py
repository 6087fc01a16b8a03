"""The screening task: ICDR grades 0-4, the referral rule and gradability."""

from __future__ import annotations

import numpy as np

GRADE_NAMES: tuple[str, ...] = (
    "no DR",
    "mild NPDR",
    "moderate NPDR",
    "severe NPDR",
    "proliferative DR",
)
NUM_GRADES = len(GRADE_NAMES)
REFERABLE_MIN_GRADE = 2
OUTPUT_NAMES: tuple[str, str] = ("grade_logits", "gradable_logit")


def is_referable(grade: np.ndarray) -> np.ndarray:
    """Referable DR: grade >= 2 (moderate NPDR or worse)."""
    return np.asarray(grade) >= REFERABLE_MIN_GRADE


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def referable_probability(grade_logits: np.ndarray) -> np.ndarray:
    """P(grade >= 2) from grade logits (N x 5)."""
    return softmax(np.asarray(grade_logits, dtype=np.float64))[:, REFERABLE_MIN_GRADE:].sum(1)


def gradable_probability(gradable_logit: np.ndarray) -> np.ndarray:
    """P(gradable) from the gradable logit (N x 1 or N)."""
    x = np.asarray(gradable_logit, dtype=np.float64).reshape(-1)
    return 1.0 / (1.0 + np.exp(-x))
