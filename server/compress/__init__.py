"""Progressive compression: layer reduction, channel and head pruning, QAT, assistant chains.

A pipeline is a declared sequence of steps (:mod:`.steps` holds the registry); the routed
multi-teacher step wraps :mod:`server.distill.routing`. Hugging Face BERT-like encoders (any
``nn.Module`` with ``encoder.layer``) lose layers and heads through :mod:`.encoders`.
"""

from server.compress.assistants import ChainConfig, distil_chain, plan_chain
from server.compress.config import CompressConfig, load_compress_config, parse_compress_config
from server.compress.encoders import (
    drop_encoder_layers,
    encoder_head_counts,
    prune_encoder_heads_,
    slice_encoder_heads_,
)
from server.compress.heads import (
    HeadPruneConfig,
    HeadPruneOutcome,
    prune_attention_heads_,
    recover,
)
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
    "HeadPruneOutcome",
    "StepContext",
    "StepKind",
    "StepResult",
    "StepSettings",
    "compress",
    "distil_chain",
    "drop_encoder_layers",
    "encoder_head_counts",
    "load_compress_config",
    "parse_compress_config",
    "plan_chain",
    "print_compress_summary",
    "prune_attention_heads_",
    "prune_encoder_heads_",
    "recover",
    "register_step",
    "run_step",
    "slice_encoder_heads_",
    "step_kind",
]
