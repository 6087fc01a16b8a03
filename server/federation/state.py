"""Per-round checkpoint of a federation run, so a restarted ServerApp resumes after the last round.

``<run-dir>/state.json`` (round number, history, identity of the starting model) beside
``<run-dir>/global.safetensors`` (the global weights after that round) and
``<run-dir>/deployed.safetensors`` (the weights the run started from). The weights file is
replaced before the JSON that points at it, each atomically, so a crash leaves either round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.federation.weights import Weights, load_weights, save_weights, weights_digest

__all__ = ["RunCheckpoint", "RunState", "StateError", "load_state", "save_state"]

STATE_FILE = "state.json"
GLOBAL_FILE = "global.safetensors"
DEPLOYED_FILE = "deployed.safetensors"


class StateError(ValueError):
    """A run directory whose state cannot be resumed; the message says what to do."""


class RunState(BaseModel):
    """What ``state.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    round: int = Field(ge=0)
    """The last completed round (0: nothing but the starting weights)."""
    model: str
    """The checkpoint JSON the run started from."""
    deployed_digest: str
    global_digest: str
    strategy: str
    history: list[dict[str, Any]] = Field(default_factory=list)
    """One summary per completed round (status, counts, weighted metrics)."""


@dataclass(frozen=True)
class RunCheckpoint:
    """A loaded run: state, the current global weights and the starting (deployed) weights."""

    state: RunState
    weights: Weights
    deployed: Weights = field(repr=False)


def save_state(run_dir: Path, state: RunState, weights: Weights, deployed: Weights) -> None:
    """Checkpoint the run after a round (writes the deployed weights once)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / DEPLOYED_FILE).is_file():
        save_weights(deployed, run_dir / DEPLOYED_FILE)
    save_weights(weights, run_dir / GLOBAL_FILE)
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(run_dir / STATE_FILE)


def load_state(run_dir: Path, deployed_digest: str) -> RunCheckpoint | None:
    """The run's checkpoint, or None for a fresh run directory.

    Refuses a run directory that started from other weights than ``deployed_digest``.
    """
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = RunState.model_validate(json.loads(path.read_text()))
    except ValueError as e:
        raise StateError(f"{path}: not a federation state file: {e}") from None
    if state.deployed_digest != deployed_digest:
        raise StateError(
            f"{run_dir} holds a run that started from other weights ({state.model}); "
            "choose a new run-dir, or delete this one to start over"
        )
    try:
        weights = load_weights(run_dir / "global.json")
        deployed = load_weights(run_dir / "deployed.json")
    except Exception as e:  # safetensors raises its own error type for a corrupt file
        raise StateError(f"{run_dir}: {e}; delete the run directory to start over") from None
    if weights_digest(weights) != state.global_digest:
        raise StateError(
            f"{run_dir / GLOBAL_FILE} does not match {path}'s digest; delete the run directory "
            "to start over"
        )
    return RunCheckpoint(state, weights, deployed)
