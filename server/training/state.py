"""Training state on disk (safetensors + JSON, never pickle), committed atomically.

Each save writes the tensors to a new file named by epoch, then replaces ``state.json`` (which
names that file) in one rename: a crash at any point leaves the previous state whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

STATE_JSON = "state.json"


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in rest["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_state(
    directory: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
) -> None:
    """Write modules, optimizer and ``info`` (which must hold ``epoch``) to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors, opt_rest = flatten_optimizer(optimizer.state_dict())
    for prefix, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    weights = f"state-{info['epoch']:04d}.safetensors"
    tmp = directory / (weights + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, directory / weights)
    payload = {"schema_version": 1, "weights": weights, "optimizer": opt_rest, **info}
    tmp_json = directory / (STATE_JSON + ".tmp")
    tmp_json.write_text(json.dumps(payload, indent=1))
    os.replace(tmp_json, directory / STATE_JSON)
    for old in directory.glob("state-*.safetensors"):
        if old.name != weights:
            old.unlink(missing_ok=True)


def read_info(directory: Path) -> dict[str, Any] | None:
    """The committed state's JSON, or None when nothing was committed yet."""
    path = directory / STATE_JSON
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except ValueError as e:
        raise ValueError(
            f"{path}: unreadable training state ({e}); delete the directory to start over"
        ) from None


def load_state(
    directory: Path,
    info: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
) -> None:
    """Restore the tensors of the state described by ``info`` (from :func:`read_info`)."""
    path = directory / info["weights"]
    try:
        tensors = load_file(str(path))
        for prefix, module in modules.items():
            n = len(prefix) + 1
            module.load_state_dict(
                {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            )
        optimizer.load_state_dict(unflatten_optimizer(tensors, info["optimizer"]))
    except (OSError, SafetensorError, RuntimeError, KeyError, ValueError) as e:
        raise ValueError(
            f"{path}: cannot restore the training state ({e}); delete {directory} to start over"
        ) from None
