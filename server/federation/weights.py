"""Model weights as ordered numpy dicts: where the deployed model is, loading, saving, digests.

Weights travel as the torch ``state_dict`` (names and order); they are read and written with
safetensors' numpy API, so nothing here imports torch or unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from edge_agent.fl import is_trained

__all__ = [
    "Weights",
    "bundle_version",
    "load_weights",
    "resolve_checkpoint",
    "save_weights",
    "split_trained",
    "weights_digest",
]

Weights = dict[str, np.ndarray]
"""Parameter name -> array, in ``state_dict`` order."""

_CANDIDATES = ("checkpoint/model.json", "model.json", "student.json")


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint JSON of ``path``: a checkpoint ``.json``, or an export / bundle / device
    slot directory holding ``checkpoint/model.json`` (or a run dir's ``student.json``)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return path
    if path.is_dir():
        for name in _CANDIDATES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"{path} holds no model checkpoint (looked for {', '.join(_CANDIDATES)}); point run "
            "config 'model' at an export or bundle directory, or at a checkpoint .json"
        )
    raise FileNotFoundError(f"run config 'model': {path} does not exist")


def bundle_version(checkpoint_json: Path) -> int | None:
    """The bundle version of the directory the checkpoint came from (its ``manifest.json``)."""
    for parent in (checkpoint_json.parent, checkpoint_json.parent.parent):
        manifest = parent / "manifest.json"
        if manifest.is_file():
            try:
                version = json.loads(manifest.read_text())["version"]
            except (ValueError, KeyError, TypeError):
                return None
            return int(version) if isinstance(version, int) else None
    return None


def load_weights(checkpoint_json: Path) -> Weights:
    """The arrays beside a checkpoint JSON (``.safetensors``), in the file's order."""
    path = Path(checkpoint_json).with_suffix(".safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path} (beside {checkpoint_json})")
    return dict(load_file(str(path)))


def save_weights(weights: Weights, path: Path) -> Path:
    """Write ``weights`` to ``path`` (safetensors) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.asarray(v, order="C") for k, v in weights.items()}, str(tmp))
    tmp.replace(path)
    return path


def weights_digest(weights: Weights) -> str:
    """A sha256 over names, dtypes, shapes and bytes (in name order): the weights' identity."""
    h = hashlib.sha256()
    for name in sorted(weights):
        array = np.asarray(weights[name], order="C")
        h.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def split_trained(weights: Weights) -> tuple[Weights, Weights]:
    """(floating arrays that rounds train and average, integer arrays the server keeps)."""
    trained = {k: v for k, v in weights.items() if is_trained(np.asarray(v))}
    kept = {k: v for k, v in weights.items() if k not in trained}
    return trained, kept
