"""Federated adaptation on the device: Flower's ClientApp trains the deployed student.

What the device and the server must agree on, the wire protocol (:mod:`.protocol`, numpy only),
and the node's process control (:mod:`.node`, :mod:`.priority`) import without torch or
Flower, as does which simulated site a partition trains on. Local training needs torch: its
names load on first use, so
``import edge_agent.fl`` stays light. The inference path (``edge_agent.service``,
``edge_agent.runtime``) never imports this package; ``edge_agent.fl.app`` holds the ClientApp
(``flwr run`` loads ``edge_agent.fl.app:app``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge_agent.fl.node import (
    NodeSettings,
    find_supernode,
    node_config_arg,
    run_node,
    supernode_command,
)
from edge_agent.fl.priority import (
    BUSY_FILE,
    BusyFile,
    BusySignal,
    lower_priority,
    mark_busy,
    pause_while_busy,
)
from edge_agent.fl.protocol import (
    ARRAYS,
    CODECS,
    CONFIG,
    M_BYTES_SENT,
    M_DECLINED,
    M_EVAL_ACCURACY,
    M_EVAL_NUM_EXAMPLES,
    M_EVAL_REFERABLE_SENSITIVITY,
    M_NUM_EXAMPLES,
    M_TRAIN_LOSS,
    METRICS,
    NORM_STATS,
    NORM_STATS_AUTO_BELOW,
    S_REASON,
    S_SITE,
    SCALE_SUFFIX,
    STATUS,
    Codec,
    RoundConfig,
    decode,
    encode,
    is_trained,
    payload_bytes,
)
from edge_agent.fl.simulated import (
    PARTITION_ID,
    SITE_FILE,
    SimulatedSite,
    is_simulated,
    prepared_root,
)

if TYPE_CHECKING:
    from edge_agent.fl.device import (
        deployed_checkpoint,
        load_deployed,
        load_reviewed,
    )
    from edge_agent.fl.local import (
        M_EVAL_REFERABLE_POSITIVES,
        M_EVAL_SITE,
        SITE_KEYS,
        Declined,
        LocalCases,
        class_weights,
        evaluate_local,
        freezes_norm,
        get_weights,
        local_loss,
        proximal_term,
        set_weights,
        train_local,
    )

_LAZY = {
    "M_EVAL_REFERABLE_POSITIVES": "local",
    "M_EVAL_SITE": "local",
    "SITE_KEYS": "local",
    "Declined": "local",
    "LocalCases": "local",
    "class_weights": "local",
    "evaluate_local": "local",
    "freezes_norm": "local",
    "get_weights": "local",
    "local_loss": "local",
    "proximal_term": "local",
    "set_weights": "local",
    "train_local": "local",
    "deployed_checkpoint": "device",
    "load_deployed": "device",
    "load_reviewed": "device",
}


def __getattr__(name: str) -> Any:
    """The torch-backed names, imported from their module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ARRAYS",
    "BUSY_FILE",
    "CODECS",
    "CONFIG",
    "METRICS",
    "M_BYTES_SENT",
    "M_DECLINED",
    "M_EVAL_ACCURACY",
    "M_EVAL_NUM_EXAMPLES",
    "M_EVAL_REFERABLE_POSITIVES",
    "M_EVAL_REFERABLE_SENSITIVITY",
    "M_EVAL_SITE",
    "M_NUM_EXAMPLES",
    "M_TRAIN_LOSS",
    "NORM_STATS",
    "NORM_STATS_AUTO_BELOW",
    "PARTITION_ID",
    "SCALE_SUFFIX",
    "SITE_FILE",
    "SITE_KEYS",
    "STATUS",
    "S_REASON",
    "S_SITE",
    "BusyFile",
    "BusySignal",
    "Codec",
    "Declined",
    "LocalCases",
    "NodeSettings",
    "RoundConfig",
    "SimulatedSite",
    "class_weights",
    "decode",
    "deployed_checkpoint",
    "encode",
    "evaluate_local",
    "find_supernode",
    "freezes_norm",
    "get_weights",
    "is_simulated",
    "is_trained",
    "load_deployed",
    "load_reviewed",
    "local_loss",
    "lower_priority",
    "mark_busy",
    "node_config_arg",
    "pause_while_busy",
    "payload_bytes",
    "prepared_root",
    "proximal_term",
    "run_node",
    "set_weights",
    "supernode_command",
    "train_local",
]
