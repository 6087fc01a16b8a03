"""Pretrained weights from a local file: ``.safetensors``, or a ``.pth`` read without pickles.

Keys may be the whole network's, or the backbone's alone (as pretrained files usually are,
possibly under a prefix such as ``vit.``); what did not fit is listed, not silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.nets.base import FundusNet


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class WeightsReport:
    """What loading a weights file did."""

    path: Path
    loaded: int
    missing: list[str] = field(default_factory=list)
    """The model's tensors the file did not have (left as initialised)."""
    unexpected: list[str] = field(default_factory=list)
    """The file's tensors the model has no place for (ignored)."""

    def describe(self) -> str:
        """One paragraph for the log."""
        text = f"loaded {self.loaded} tensors from {self.path}"
        for what, keys in (
            ("missing (left as initialised)", self.missing),
            ("unexpected (ignored)", self.unexpected),
        ):
            if keys:
                text += f"; {len(keys)} {what}: {_some(keys)}"
        return text


def _some(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n})" if len(keys) > n else "")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file (``weights_only``:
    nothing is unpickled but tensors and plain containers)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        if path.suffix not in (".pth", ".pt", ".bin"):
            raise WeightsError(f"{path}: weights must be .safetensors or .pth/.pt/.bin")
        data = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):  # training checkpoints often nest the state
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of names to tensors)")
    return data


def _renamings(keys: list[str]) -> list[tuple[str, str]]:
    """(prefix to strip, prefix to add) pairs worth trying."""
    tries = [("", ""), ("", "backbone.")]
    firsts = {k.split(".", 1)[0] + "." for k in keys if "." in k}
    tries += [(p, "backbone.") for p in sorted(firsts)]
    tries += [(p, "") for p in sorted(firsts)]
    return tries


def load_weights_(model: FundusNet, path: str | Path) -> WeightsReport:
    """Load ``path`` into ``model`` in place, matching keys as they are or as the backbone's.

    Raises :class:`WeightsError` when no tensor fits, or a matching name has another shape.
    """
    state = read_weights(path)
    own = model.state_dict()
    best: dict[str, torch.Tensor] = {}
    renamed = ("", "")
    for strip, add in _renamings(list(state)):
        mapped = {add + k[len(strip) :]: v for k, v in state.items() if k.startswith(strip)}
        fitting = {k: v for k, v in mapped.items() if k in own}
        if len(fitting) > len(best):
            best, renamed = fitting, (strip, add)
    if not best:
        raise WeightsError(
            f"{path}: none of its {len(state)} tensors fit the {model.family} model; the file "
            f"has {_some(sorted(state), 4)}; the model expects {_some(list(own), 4)}"
        )
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in best.items()
        if v.shape != own[k].shape
    ]
    if wrong:
        raise WeightsError(f"{path}: tensors of the wrong shape for this model: {_some(wrong, 4)}")
    model.load_state_dict(best, strict=False)
    strip, add = renamed
    used = {strip + k[len(add) :] for k in best}
    return WeightsReport(
        path=Path(path),
        loaded=len(best),
        missing=[k for k in own if k not in best],
        unexpected=[k for k in state if k not in used],
    )
