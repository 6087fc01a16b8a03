"""Training state on disk (safetensors + JSON, never pickle), written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


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
    """Write modules, optimizer and ``info`` to ``directory`` (the JSON last: it commits)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors, opt_rest = flatten_optimizer(optimizer.state_dict())
    for prefix, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    tmp = directory / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, directory / "state.safetensors")
    payload = {"schema_version": 1, "optimizer": opt_rest, **info}
    tmp_json = directory / "state.json.tmp"
    tmp_json.write_text(json.dumps(payload, indent=1))
    os.replace(tmp_json, directory / "state.json")


def load_state(
    directory: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore what :func:`save_state` wrote; returns its ``info``, or None if nothing is there."""
    meta_path = directory / "state.json"
    if not meta_path.is_file():
        return None
    info = json.loads(meta_path.read_text())
    tensors = load_file(str(directory / "state.safetensors"))
    for prefix, module in modules.items():
        sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        module.load_state_dict(sub)
    optimizer.load_state_dict(unflatten_optimizer(tensors, info.pop("optimizer")))
    return info
