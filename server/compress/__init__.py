"""Progressive compression: layer reduction, channel and head pruning, QAT, assistants, routing."""

from server.compress.steps import (
    StepContext,
    StepKind,
    StepResult,
    StepSettings,
    register_step,
    run_step,
    step_kind,
)

__all__ = [
    "StepContext",
    "StepKind",
    "StepResult",
    "StepSettings",
    "register_step",
    "run_step",
    "step_kind",
]
