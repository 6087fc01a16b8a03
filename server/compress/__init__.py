"""Progressive compression: layer reduction, channel and head pruning, QAT, assistant chains.

A pipeline is a declared sequence of steps (:mod:`.steps` holds the registry); the routed
multi-teacher step wraps :mod:`server.distill.routing`.
"""

from server.compress.assistants import ChainConfig, distil_chain, plan_chain
from server.compress.config import CompressConfig, load_compress_config, parse_compress_config
from server.compress.heads import HeadPruneConfig, prune_attention_heads_, recover
from server.compress.pipeline import compress
from server.compress.report import print_compress_summary
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
    "ChainConfig",
    "CompressConfig",
    "HeadPruneConfig",
    "StepContext",
    "StepKind",
    "StepResult",
    "StepSettings",
    "compress",
    "distil_chain",
    "load_compress_config",
    "parse_compress_config",
    "plan_chain",
    "print_compress_summary",
    "prune_attention_heads_",
    "recover",
    "register_step",
    "run_step",
    "step_kind",
]
