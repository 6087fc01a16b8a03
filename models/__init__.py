"""What a model is and what it sees: the task, metrics, preprocessing, data and (torch) nets.

Importing this package does not import torch; the networks live in :mod:`models.nets`.
"""

from models.preprocess import PreprocessSpec
from models.task import GRADE_NAMES, NUM_GRADES, OUTPUT_NAMES, REFERABLE_MIN_GRADE, is_referable

__all__ = [
    "GRADE_NAMES",
    "NUM_GRADES",
    "OUTPUT_NAMES",
    "REFERABLE_MIN_GRADE",
    "PreprocessSpec",
    "is_referable",
]
