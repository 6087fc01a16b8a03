"""Hidden states of any module, taken by forward hooks: which modules to tap, and their outputs
as feature maps on a batch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from models.nets import Probed, auto_taps, capture, first_tensor, observe
from server.distill.batches import Inputs, as_feature_map, call, pick_logits

_LOOKUPS = (nn.Embedding, nn.EmbeddingBag)
"""Modules whose outputs are table look-ups, not features: never chosen as automatic taps."""


def candidate_taps(
    model: nn.Module, inputs: Inputs, names: list[str] | None, output_key: str | None
) -> Probed:
    """The model's modules whose outputs are features on ``inputs``: ``names``, or (None) its
    repeated blocks shallow to deep, less the module giving the logits themselves."""
    logits: list[torch.Tensor] = []

    def run() -> Any:
        out = call(model, inputs)
        logits.append(pick_logits(out, output_key))
        return out

    def features(out: Any) -> torch.Tensor | None:  # applied after the pass
        return None if names is None and first_tensor(out) is logits[0] else as_feature_map(out)

    _, maps, kinds = observe(model, run, features)
    if names is None:
        modules = dict(model.named_modules())
        maps = {n: s for n, s in maps.items() if not isinstance(modules[n], _LOOKUPS)}
        names = auto_taps(Probed(width=0, maps=maps, kinds=kinds), count=len(maps))
    for name in names:
        if name not in maps:
            some = ", ".join(list(maps)[-8:]) or "none"
            raise ValueError(
                f"{type(model).__name__} has no module {name!r} giving features on this batch; "
                f"some that do: {some}"
            )
    return Probed(0, {n: maps[n] for n in names}, {n: kinds[n] for n in names})


def forward_taps(
    model: nn.Module, inputs: Inputs, names: Iterable[str]
) -> tuple[Any, dict[str, torch.Tensor]]:
    """The model's output on ``inputs`` and the named modules' outputs as feature maps."""
    names = list(names)
    with capture(model, names) as got:
        out = call(model, inputs)
    taps: dict[str, torch.Tensor] = {}
    for name in names:
        m = as_feature_map(got.get(name))
        if m is None:
            raise RuntimeError(f"module {name!r} gave no features on this batch")
        taps[name] = m
    return out, taps
