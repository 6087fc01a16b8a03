"""What a model is and what it sees: the task, metrics, preprocessing, data and (torch) nets.

Importing this package does not import torch; the networks live in :mod:`models.nets`.
"""

from models.metrics import (
    METRIC_NAMES,
    Estimate,
    Predictions,
    operating_point,
    paired_difference,
    screening_metrics,
)
from models.preprocess import PreprocessSpec
from models.task import (
    GRADE_NAMES,
    NUM_GRADES,
    OUTPUT_NAMES,
    REFERABLE_MIN_GRADE,
    gradable_probability,
    is_referable,
    referable_probability,
    softmax,
)

__all__ = [
    "GRADE_NAMES",
    "METRIC_NAMES",
    "NUM_GRADES",
    "OUTPUT_NAMES",
    "REFERABLE_MIN_GRADE",
    "Estimate",
    "Predictions",
    "PreprocessSpec",
    "gradable_probability",
    "is_referable",
    "operating_point",
    "paired_difference",
    "referable_probability",
    "screening_metrics",
    "softmax",
]
