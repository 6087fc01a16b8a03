"""Distillation: a large teacher into a small student, with monitors that check it is learning."""

from server.distill.config import ConfigError, DistillConfig, load_config, parse_config
from server.distill.run import RunOutcome, run
from server.distill.trainer import FitResult, Trainer, TrainingData

__all__ = [
    "ConfigError",
    "DistillConfig",
    "FitResult",
    "RunOutcome",
    "Trainer",
    "TrainingData",
    "load_config",
    "parse_config",
    "run",
]
