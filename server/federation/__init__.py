"""Federated adaptation (Flower's Message API): the ServerApp, validation, promotion, registry.

Importing this package does not import Flower; ``server.federation.app`` holds the ServerApp
(``flwr run`` loads ``server.federation.app:app``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from server.federation.evaluation import predict_weights
from server.federation.gate import GateResult, gate, images_needed, pass_probability
from server.federation.loopback import LocalNode, LoopbackFederation
from server.federation.promotion import Decision, PackageConfig, gate_candidate, promote
from server.federation.provenance import (
    PROVENANCE_FILE,
    ModelRef,
    Provenance,
    last_validated,
    mark_validated,
    read_provenance,
)
from server.federation.registry import DecisionRecord, Participant, Registry, RoundRecord
from server.federation.rehearsal import ensure_site, prepare_sites
from server.federation.settings import (
    RUN_CONFIG_DEFAULTS,
    STRATEGIES,
    FederationSettings,
    SettingsError,
)
from server.federation.state import (
    DEPLOYED_FILE,
    GLOBAL_FILE,
    RunCheckpoint,
    RunState,
    StateError,
    load_state,
    save_state,
)
from server.federation.superlink import (
    APP_DIR,
    CONNECTION,
    LinkOptions,
    connection_toml,
    register_supernodes,
    run_config_toml,
    run_outcome,
    running_superlink,
    superlink_command,
    wait_port,
)
from server.federation.validation import Candidate, Verdict, decode_update, screen_updates
from server.federation.weights import load_weights, resolve_checkpoint, save_weights

if TYPE_CHECKING:
    from server.federation.strategies import aggregate_updates

_NEEDS_FLOWER = {"aggregate_updates": "strategies"}


def __getattr__(name: str) -> Any:
    """Names whose modules import Flower, imported on first use."""
    module = _NEEDS_FLOWER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "APP_DIR",
    "CONNECTION",
    "DEPLOYED_FILE",
    "GLOBAL_FILE",
    "PROVENANCE_FILE",
    "RUN_CONFIG_DEFAULTS",
    "STRATEGIES",
    "Candidate",
    "Decision",
    "DecisionRecord",
    "FederationSettings",
    "GateResult",
    "LinkOptions",
    "LocalNode",
    "LoopbackFederation",
    "ModelRef",
    "PackageConfig",
    "Participant",
    "Provenance",
    "Registry",
    "RoundRecord",
    "RunCheckpoint",
    "RunState",
    "SettingsError",
    "StateError",
    "Verdict",
    "aggregate_updates",
    "connection_toml",
    "decode_update",
    "ensure_site",
    "gate",
    "gate_candidate",
    "images_needed",
    "last_validated",
    "load_state",
    "load_weights",
    "mark_validated",
    "pass_probability",
    "predict_weights",
    "prepare_sites",
    "promote",
    "read_provenance",
    "register_supernodes",
    "resolve_checkpoint",
    "run_config_toml",
    "run_outcome",
    "running_superlink",
    "save_state",
    "save_weights",
    "screen_updates",
    "superlink_command",
    "wait_port",
]
