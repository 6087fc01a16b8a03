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
    task_metric_table,
    task_metrics,
    task_operating_point,
)
from models.preprocess import PreprocessSpec
from models.task import (
    DR_GRADING,
    GRADE_NAMES,
    KINDS,
    NUM_GRADES,
    OUTPUT_NAMES,
    REFERABLE_MIN_GRADE,
    InputSpec,
    OutputNames,
    Referral,
    TaskSpec,
    TaskSpecError,
    gradable_probability,
    is_referable,
    load_task,
    parse_task,
    referable_probability,
    softmax,
)

__all__ = [
    "DR_GRADING",
    "GRADE_NAMES",
    "KINDS",
    "METRIC_NAMES",
    "NUM_GRADES",
    "OUTPUT_NAMES",
    "REFERABLE_MIN_GRADE",
    "Estimate",
    "InputSpec",
    "OutputNames",
    "Predictions",
    "PreprocessSpec",
    "Referral",
    "TaskSpec",
    "TaskSpecError",
    "gradable_probability",
    "is_referable",
    "load_task",
    "operating_point",
    "paired_difference",
    "parse_task",
    "referable_probability",
    "screening_metrics",
    "softmax",
    "task_metric_table",
    "task_metrics",
    "task_operating_point",
]
