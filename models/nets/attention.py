"""Multi-head attention of transformer backbones: find it, cut heads out, find the block list.

Four layouts are known, by their attribute names rather than their classes (so timm and
transformers are never imported here): Fovea's ViT (``q``, ``k``, ``v``, ``out``), Hugging Face
image ViTs (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``), BERT-like encoders
(``attention.self.query/key/value`` with ``attention.output.dense``) and timm (a fused ``qkv``
whose rows are [q; k; v], then ``proj``). Each reshapes by its head width, so slicing a head's
rows and output-projection columns, and updating the head-count attributes, leaves a smaller
attention that runs and exports as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_SEPARATE = (("q", "k", "v", "out"), ("q_proj", "k_proj", "v_proj", "o_proj"))
_COUNTS = ("num_heads", "num_attention_heads")
"""Attributes holding an attention's head count."""
_WIDTHS = ("attn_dim", "all_head_size")
"""Attributes holding heads x head width."""


def head_rows(heads: list[int], count: int, head_dim: int) -> torch.Tensor:
    """The q/k/v rows (output-projection columns) of ``heads`` out of ``count`` heads."""
    if not heads or min(heads) < 0 or max(heads) >= count or len(set(heads)) != len(heads):
        raise ValueError(f"bad heads to keep {heads} for a block of {count} heads")
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in sorted(heads)])


def slice_linear(
    layer: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None
) -> nn.Linear:
    """A new Linear holding ``rows`` (outputs) and ``cols`` (inputs) of ``layer``."""
    w = layer.weight.detach()
    w = w[rows] if rows is not None else w
    w = w[:, cols] if cols is not None else w
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            b = layer.bias.detach()
            new.bias.copy_(b[rows] if rows is not None else b)
    return new


@dataclass(frozen=True)
class HeadSite:
    """One multi-head attention: the module with its q, k, v projections (``inputs``: three
    names, or one fused ``qkv``) and the module holding its output projection."""

    attention: nn.Module
    inputs: tuple[str, ...]
    output: nn.Module
    output_name: str
    head_dim: int

    @property
    def out(self) -> nn.Linear:
        """The output projection (its input columns are the heads' outputs, head by head)."""
        layer = getattr(self.output, self.output_name)
        assert isinstance(layer, nn.Linear)
        return layer

    @property
    def count(self) -> int:
        """Heads left."""
        return self.out.in_features // self.head_dim

    def slice_(self, heads: list[int]) -> None:
        """Keep only ``heads`` (indices into the current heads), in place."""
        count = self.count
        rows = head_rows(heads, count, self.head_dim)
        fused = len(self.inputs) == 1
        width = count * self.head_dim
        into = torch.cat([rows + j * width for j in range(3)]) if fused else rows
        for name in self.inputs:
            setattr(self.attention, name, slice_linear(getattr(self.attention, name), into, None))
        gate = getattr(self.attention, "gate", None)  # timm's optional per-channel output gate
        if fused and isinstance(gate, nn.Linear):
            self.attention.gate = slice_linear(gate, rows, None)
        setattr(self.output, self.output_name, slice_linear(self.out, None, rows))
        # plain attributes (not modules): what the attention reshapes or reports with
        for attr, value in ((_COUNTS, len(heads)), (_WIDTHS, len(heads) * self.head_dim)):
            for name in attr:
                if isinstance(getattr(self.attention, name, None), int):
                    setattr(self.attention, name, value)


def _linear(m: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(m, n, None), nn.Linear) for n in names)


def _site(m: nn.Module) -> HeadSite | None:
    head_dim = getattr(m, "head_dim", None)
    for q, k, v, out in _SEPARATE:
        if _linear(m, q, k, v, out) and isinstance(head_dim, int):
            if not getattr(m, q).out_features == getattr(m, k).out_features:
                raise ValueError(f"{type(m).__name__}: grouped key/value heads cannot be pruned")
            return HeadSite(m, (q, k, v), m, out, head_dim)
    if _linear(m, "qkv", "proj") and isinstance(head_dim, int):
        if not isinstance(getattr(m, "norm", nn.Identity()), nn.Identity):
            raise ValueError(f"{type(m).__name__}: a norm over all heads cannot be sliced")
        return HeadSite(m, ("qkv",), m, "proj", head_dim)
    inner, output = getattr(m, "self", None), getattr(m, "output", None)
    if (
        isinstance(inner, nn.Module)
        and _linear(inner, "query", "key", "value")
        and isinstance(output, nn.Module)
        and _linear(output, "dense")
    ):
        width = int(getattr(inner, "attention_head_size"))  # noqa: B009 (a plain attribute)
        return HeadSite(inner, ("query", "key", "value"), output, "dense", width)
    return None


def head_sites(model: nn.Module) -> list[HeadSite]:
    """``model``'s multi-head attentions, in forward order."""
    return [s for m in model.modules() if (s := _site(m)) is not None]


def set_head_counts_(model: nn.Module, counts: list[int]) -> None:
    """Give attention ``i`` of ``model`` its first ``counts[i]`` heads, in place (a pruned
    model's shapes, before its weights are loaded)."""
    sites = head_sites(model)
    if len(counts) != len(sites):
        raise ValueError(
            f"heads {counts} name {len(counts)} attentions; the model has {len(sites)}"
        )
    for site, n in zip(sites, counts, strict=True):
        if n != site.count:
            site.slice_(list(range(n)))


def block_list(model: nn.Module) -> tuple[str, nn.Sequential | nn.ModuleList] | None:
    """The name and container of ``model``'s transformer blocks: the list whose every item
    holds one attention, together all of them; None when there is no such list."""
    total = len(head_sites(model))
    for name, m in model.named_modules():
        listed = total and isinstance(m, nn.Sequential | nn.ModuleList) and len(m) == total
        if listed and all(len(head_sites(block)) == 1 for block in m):
            return name, m
    return None
