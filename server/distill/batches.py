"""Batches and outputs of any ``nn.Module``: a tensor or a dict of tensors in, a tensor or a dict
(a Hugging Face ``ModelOutput`` included) out, and its hidden states as feature maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from models.nets import first_tensor

Inputs = torch.Tensor | dict[str, torch.Tensor]
"""What a model is called with: ``model(x)`` for a tensor, ``model(**inputs)`` for a dict."""


def split_batch(batch: Any, label_key: str) -> tuple[Inputs, torch.Tensor | None]:
    """(inputs, targets or None) of a batch: a tensor, a dict of tensors (its ``label_key``
    entry, when there is one, is the target), or an (inputs, targets) pair of those."""
    target: torch.Tensor | None = None
    inputs = batch
    if isinstance(batch, tuple | list):
        if len(batch) != 2:
            raise ValueError(
                f"a batch given as a {type(batch).__name__} must be (inputs, targets); "
                f"this one has {len(batch)} items"
            )
        inputs, target = batch
    if isinstance(inputs, Mapping):
        if label_key in inputs:
            target = inputs[label_key] if target is None else target
        inputs = {k: v for k, v in inputs.items() if k != label_key}
        wrong = [k for k, v in inputs.items() if not isinstance(v, torch.Tensor)]
        if wrong:
            raise TypeError(f"batch entries {wrong} are not tensors; a batch holds tensors only")
    elif not isinstance(inputs, torch.Tensor):
        raise TypeError(
            f"a batch is a tensor, a dict of tensors or an (inputs, targets) pair, "
            f"not {type(inputs).__name__}"
        )
    if target is not None and not isinstance(target, torch.Tensor):
        raise TypeError(f"targets must be a tensor, not {type(target).__name__}")
    return inputs, target


def to_device(inputs: Inputs, device: torch.device) -> Inputs:
    """``inputs`` on ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


def call(model: nn.Module, inputs: Inputs) -> Any:
    """``model(x)`` for a tensor, ``model(**inputs)`` for a dict."""
    return model(inputs) if isinstance(inputs, torch.Tensor) else model(**inputs)


def pick_logits(out: Any, key: str | None) -> torch.Tensor:
    """The logits in a model's output: its ``key`` entry; with ``key`` None the output itself
    when a tensor, else its ``logits`` entry when it has one, else its first tensor."""
    if isinstance(out, torch.Tensor) and key is None:
        return out
    if isinstance(out, Mapping):
        if key is not None:
            if not isinstance(out.get(key), torch.Tensor):
                raise KeyError(f"output_key {key!r} is not among the outputs {list(out)}")
            return out[key]
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
    elif key is not None:
        raise KeyError(f"output_key {key!r} names an entry, but the output is {type(out).__name__}")
    t = first_tensor(out)
    if t is None:
        raise TypeError(f"the model returned {type(out).__name__} with no tensor in it")
    return t


def as_feature_map(out: Any) -> torch.Tensor | None:
    """A module's output as (N, C, H, W) for the projectors: maps as they are, token features
    (N, L, C) as (N, C, L, 1) (token by token, whatever L is), vectors (N, C) as (N, C, 1, 1);
    None when it is none of these (integer ids, scalars)."""
    t = first_tensor(out)
    if t is None or not t.is_floating_point():
        return None
    if t.ndim == 4:
        return t
    if t.ndim == 3:
        return t.transpose(1, 2).unsqueeze(-1)
    if t.ndim == 2:
        return t[:, :, None, None]
    return None


def position_masks(
    inputs: Inputs, mask_key: str | None, taps: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor] | None:
    """For each tap holding token features (N, C, L, 1), the batch's ``mask_key`` entry (N, L,
    e.g. an attention mask) as N x 1 x L x 1 floats, so that padding does not count."""
    if mask_key is None or not isinstance(inputs, dict):
        return None
    mask = inputs.get(mask_key)
    if mask is None or mask.ndim != 2:
        return None
    n, length = mask.shape
    m = mask.to(torch.float32).view(n, 1, length, 1)
    return {t: m for t, v in taps.items() if v.shape[0] == n and tuple(v.shape[2:]) == (length, 1)}
