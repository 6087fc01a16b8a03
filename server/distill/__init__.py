"""Distillation: a large teacher into a small student, with monitors that check it is learning.

The image-first :class:`Trainer` (and :func:`run`) work on Fovea's fundus data; any other
``nn.Module`` (token inputs, dict outputs) is distilled with :func:`distill_module`.
"""

from server.distill.any_module import (
    ModuleDistillConfig,
    ModuleDistillResult,
    batch_loss,
    distill_module,
)
from server.distill.config import (
    DistillConfig,
    LossConfig,
    MonitorConfig,
    SearchConfig,
    dump_config,
    load_config,
    parse_config,
)
from server.distill.losses import Mix, distillation_loss, label_loss, task_loss
from server.distill.pipeline import RunOutcome, run
from server.distill.routing import MultiTeacherOutcome, RouterConfig, distil_multi_teacher
from server.distill.trainer import FitResult, Trainer
from server.training import ConfigError, TrainingData

__all__ = [
    "ConfigError",
    "DistillConfig",
    "FitResult",
    "LossConfig",
    "Mix",
    "ModuleDistillConfig",
    "ModuleDistillResult",
    "MonitorConfig",
    "MultiTeacherOutcome",
    "RouterConfig",
    "RunOutcome",
    "SearchConfig",
    "Trainer",
    "TrainingData",
    "batch_loss",
    "distil_multi_teacher",
    "distill_module",
    "distillation_loss",
    "dump_config",
    "label_loss",
    "load_config",
    "parse_config",
    "run",
    "task_loss",
]
