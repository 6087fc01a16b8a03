"""Feature taps from any backbone: forward hooks on named modules, every output made 4-D."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def first_tensor(out: Any) -> torch.Tensor | None:
    """The tensor a module's output stands for: itself, or the first tensor in a tuple or mapping
    (a Hugging Face ``ModelOutput`` is a mapping)."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out
    if isinstance(values, tuple | list) or isinstance(out, Mapping):
        for v in values:
            if isinstance(v, torch.Tensor):
                return v
    return None


def as_map(out: Any) -> torch.Tensor | None:
    """A module's output as a (N, C, h, w) map, or None when it is not a feature map.

    Tokens (N, L, D) become a (N, D, s, s) grid when L is a square (or L - 1 is: a class token
    first, which is dropped), else (N, D, L, 1).
    """
    t = first_tensor(out)
    if t is None or not t.is_floating_point():
        return None
    if t.ndim == 4:
        return t
    if t.ndim != 3:
        return None
    n, length, dim = t.shape
    for skip in (0, 1):
        side = math.isqrt(max(length - skip, 0))
        if side > 0 and side * side == length - skip:
            return t[:, skip:].transpose(1, 2).reshape(n, dim, side, side)
    return t.transpose(1, 2).unsqueeze(-1)


def pooled(out: Any) -> torch.Tensor:
    """The backbone's pooled features (N, D): its ``pooler_output`` when it has one, else its
    first tensor averaged over space (maps) or tokens (sequences)."""
    if isinstance(out, Mapping) and out.get("pooler_output") is not None:
        out = out["pooler_output"]
    t = first_tensor(out)
    if t is None:
        raise ValueError(f"the backbone returned {type(out).__name__}, not a tensor of features")
    if t.ndim == 4:
        return t.mean((2, 3))
    if t.ndim == 3:
        return t.mean(1)
    if t.ndim == 2:
        return t
    raise ValueError(f"the backbone returned features of shape {tuple(t.shape)}; expected 2-4 dims")


@contextmanager
def capture(backbone: nn.Module, names: list[str]) -> Iterator[dict[str, Any]]:
    """Within the block, the outputs of ``backbone``'s modules ``names``, keyed by name."""
    modules = dict(backbone.named_modules())
    captured: dict[str, Any] = {}

    def keeper(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            captured[name] = output

        return keep

    handles = [modules[n].register_forward_hook(keeper(n)) for n in names]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class _Seen:
    name: str
    kind: str
    order: int

    @property
    def depth(self) -> int:
        return self.name.count(".") + 1


@dataclass(frozen=True)
class Probed:
    """What one dummy pass showed: the pooled feature width and the modules giving maps."""

    width: int
    maps: dict[str, tuple[int, ...]]
    """Module name -> its output as a map (C, h, w), in the order the modules finished."""
    kinds: dict[str, str]


def observe(
    module: nn.Module,
    run: Callable[[], Any],
    to_map: Callable[[Any], torch.Tensor | None] = as_map,
) -> tuple[Any, dict[str, tuple[int, ...]], dict[str, str]]:
    """Call ``run`` (one pass of ``module``, in eval mode, no grad) and see which of the module's
    submodules with weights give maps by ``to_map``: (the pass's output, name -> map shape
    without the batch axis in the order the modules finished, name -> class path)."""
    names = [n for n, m in module.named_modules() if n and any(True for _ in m.parameters())]
    was = module.training
    module.eval()
    try:
        with torch.no_grad(), capture(module, names) as captured:
            out = run()
    finally:
        module.train(was)
    modules = dict(module.named_modules())
    maps: dict[str, tuple[int, ...]] = {}
    for name, output in captured.items():  # filled as modules finish: shallow work first
        m = to_map(output)
        if m is not None:
            maps[name] = tuple(m.shape[1:])
    kinds = {n: f"{type(modules[n]).__module__}.{type(modules[n]).__qualname__}" for n in maps}
    return out, maps, kinds


def probe(backbone: nn.Module, image_size: int) -> Probed:
    """Run ``backbone`` once on zeros and see which of its modules (with weights) give maps."""
    device = next((p.device for p in backbone.parameters()), None)
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    try:
        out, maps, kinds = observe(backbone, lambda: backbone(x))
    except Exception as e:
        raise ValueError(
            f"the backbone failed on a 1 x 3 x {image_size} x {image_size} input: {e}"
        ) from e
    return Probed(width=int(pooled(out).shape[1]), maps=maps, kinds=kinds)


def auto_taps(seen: Probed, count: int) -> list[str]:
    """``count`` taps at even relative depths along the backbone's blocks.

    The blocks are the shallowest modules of one class that occur at least twice (transformer
    layers, ResNet stages, inverted residuals); taps are then chosen as the distillation's
    ``auto_layers`` pairs layers, the deepest always included.
    """
    entries = [_Seen(n, seen.kinds[n], i) for i, n in enumerate(seen.maps)]
    if not entries:
        return []
    groups: dict[tuple[int, str], list[_Seen]] = {}
    for e in entries:
        groups.setdefault((e.depth, e.kind), []).append(e)
    repeated = [g for g in groups.values() if len(g) >= 2]
    if repeated:
        # shallowest, then most members, then not a bare torch.nn layer, then latest to finish
        blocks = min(
            repeated,
            key=lambda g: (
                g[0].depth,
                -len(g),
                g[0].kind.startswith("torch.nn."),
                -g[-1].order,
            ),
        )
    else:
        blocks = entries
    names = [e.name for e in sorted(blocks, key=lambda e: e.order)]
    if count >= len(names):
        return names
    picked = [names[max(round((k + 1) / count * len(names)) - 1, 0)] for k in range(count)]
    return list(dict.fromkeys(picked))
