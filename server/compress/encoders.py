"""Hugging Face encoders (BERT-like): drop whole layers, cut attention heads out.

Such an encoder keeps its layers in ``encoder.layer`` (a ModuleList, wherever the encoder sits:
``bert.encoder.layer`` in a classifier), and each layer's attention module holds the
self-attention (``query``, ``key``, ``value``, ``attention_head_size``) beside its output
projection (``output.dense``). transformers 5 has no ``prune_heads``: the heads' q, k and v rows
and output-projection columns are sliced away (:mod:`models.nets.attention`), and the attention's
head count updated (it reshapes with -1 heads, so the smaller model runs and exports as it is).
The result is physically smaller; like Fovea's own ViT it is scored by head gates or gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import torch
from torch import nn

from models.nets import HeadSite, head_rows, head_sites
from server.compress.heads import (
    HeadPruneConfig,
    HeadPruneOutcome,
    attach_gates_,
    cut_heads_,
    detach_gates_,
)
from server.distill import ModuleDistillConfig, batch_loss, distill_module

_LAYER_LISTS = (["encoder", "layer"], ["encoder", "layers"])


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The layers of ``model``'s encoder (its ``encoder.layer`` ModuleList)."""
    found = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and n.split(".")[-2:] in _LAYER_LISTS
    ]
    if len(found) != 1:
        raise ValueError(
            f"{type(model).__name__}: expected one encoder layer list (encoder.layer), found "
            f"{len(found)}; layer reduction knows BERT-like Hugging Face encoders"
        )
    return found[0]


def spread(count: int, total: int) -> list[int]:
    """``count`` of ``total`` layer indices at even relative depths, the last always included."""
    return sorted({max(round((k + 1) / count * total) - 1, 0) for k in range(count)})


def drop_encoder_layers(model: nn.Module, keep: int | Sequence[int]) -> nn.Module:
    """A copy of ``model`` keeping only the encoder layers ``keep``: indices, or how many to
    keep at even relative depths. Its config's ``num_hidden_layers`` and the layers' cache
    indices follow, so the copy runs, saves and exports like any model of its class."""
    total = len(encoder_layers(model))
    indices = spread(keep, total) if isinstance(keep, int) else sorted(set(keep))
    if not indices or indices[0] < 0 or indices[-1] >= total or len(indices) > total:
        raise ValueError(f"cannot keep layers {keep} of an encoder with {total} layers")
    smaller = copy.deepcopy(model)
    old = encoder_layers(smaller)
    parent_name = next(n for n, m in smaller.named_modules() if m is old).rpartition(".")
    kept = nn.ModuleList(old[i] for i in indices)
    setattr(smaller.get_submodule(parent_name[0]), parent_name[2], kept)
    for new_index, layer in enumerate(kept):
        for m in layer.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                setattr(m, "layer_idx", new_index)  # noqa: B010 (a plain attribute)
    config = getattr(smaller, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(indices)
        types = getattr(config, "layer_types", None)
        if isinstance(types, list) and len(types) == total:
            config.layer_types = [types[i] for i in indices]
    return smaller


def encoder_attention(model: nn.Module) -> list[HeadSite]:
    """The model's attention modules in forward order (BERT-like: ``attention.self`` with
    ``attention.output.dense``)."""
    return head_sites(model)


def encoder_head_counts(model: nn.Module) -> list[int]:
    """Heads of each attention module."""
    return [a.count for a in encoder_attention(model)]


def slice_encoder_heads_(model: nn.Module, keep: list[list[int]]) -> nn.Module:
    """Cut every head not in ``keep`` (head indices per layer) out of ``model`` in place;
    returns ``model``."""
    sites = encoder_attention(model)
    if not sites or len(keep) != len(sites):
        raise ValueError(f"keep lists {len(keep)} layers but the model has {len(sites)}")
    for site, heads in zip(sites, keep, strict=True):
        head_rows(heads, site.count, site.head_dim)  # refuse a bad list before cutting anything
    for site, heads in zip(sites, keep, strict=True):
        site.slice_(heads)
    return model


def encoder_head_importance(
    model: nn.Module,
    batches: Iterable[Any],
    prune: HeadPruneConfig,
    teacher: nn.Module | None = None,
    distill: ModuleDistillConfig | None = None,
) -> list[torch.Tensor]:
    """Each head's importance: ``gates``: L1-regularised gates trained by
    :func:`distill_module` from ``teacher`` (folded into the weights afterwards); ``gradient``:
    |dLoss/dgate| with gates at 1 over ``prune.importance_batches`` batches (the distillation
    loss against ``teacher``, or the labels alone), normalised per layer."""
    config = distill or ModuleDistillConfig()
    if prune.method == "gates":
        if teacher is None:
            raise ValueError("gate scoring trains the gates by distillation: pass a teacher")
        gates = attach_gates_(model, prune.l1)
        try:
            distill_module(teacher, model, batches, config)
        finally:
            values = detach_gates_(model, fold=True)
        return [v.abs() for v in values]
    gates = attach_gates_(model)
    total = [torch.zeros_like(g) for g in gates.values]
    device, was = next(model.parameters()).device, model.training
    model.eval()  # no dropout: the importance of the model as it will run
    try:
        for batch in islice(batches, prune.importance_batches):
            loss = batch_loss(model, teacher, batch, config, device)
            for acc, g in zip(total, torch.autograd.grad(loss, list(gates.values)), strict=True):
                acc += g.abs()
    finally:
        detach_gates_(model, fold=False)
        model.train(was)
    return [t / t.norm().clamp_min(1e-12) for t in total]


def prune_encoder_heads_(
    model: nn.Module,
    batches: Iterable[Any],
    prune: HeadPruneConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    distill: ModuleDistillConfig | None = None,
) -> HeadPruneOutcome:
    """Score ``model``'s heads on ``batches`` (see :func:`encoder_head_importance`), then cut it
    down to ``prune.keep_ratio`` of its heads in place. Recovery (:func:`distill_module` from
    the teacher again) is the caller's."""
    prune = prune or HeadPruneConfig()
    importance = encoder_head_importance(model, batches, prune, teacher, distill)
    return cut_heads_(model, importance, prune, encoder_head_counts, slice_encoder_heads_)
