"""A small Vision Transformer, usable as teacher or student.

Attention keeps separate q, k, v and output projections, and reshapes with -1 heads, so later
stages can prune heads by slicing rows and columns.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from models.nets.base import FundusNet


class Attention(nn.Module):
    """Multi-head self-attention with a head dimension fixed at construction."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over the tokens of x (N, T, D)."""
        n, t, _ = x.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(n, t, -1, self.head_dim).transpose(1, 2)

        y = nn.functional.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x))
        )
        return self.out(y.transpose(1, 2).reshape(n, t, -1))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, head_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim or dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _per_layer_heads(
    dim: int, depth: int, heads: int | list[int], head_dim: int | None
) -> list[int]:
    """Heads of each block; a list (as head pruning leaves it) needs an explicit head_dim."""
    if isinstance(heads, int):
        if heads < 1 or (head_dim is None and dim % heads):
            raise ValueError(f"vit needs dim divisible by heads ({dim}, {heads})")
        return [heads] * depth
    per_layer = [int(h) for h in heads]
    if len(per_layer) != depth or min(per_layer, default=0) < 1:
        raise ValueError(f"vit heads {per_layer} must give every one of {depth} blocks >= 1 head")
    if head_dim is None:
        raise ValueError("vit with per-block heads needs head_dim (the width of one head)")
    return per_layer


class ViT(FundusNet):
    """Patch embedding, transformer blocks, mean-pooled tokens. Taps: ``block1`` .. ``blockN``."""

    family = "vit"

    def __init__(
        self,
        dim: int = 96,
        depth: int = 6,
        heads: int | list[int] = 4,
        patch: int = 8,
        mlp_ratio: float = 2.0,
        image_size: int = 64,
        dropout: float = 0.1,
        head_dim: int | None = None,
    ) -> None:
        per_layer = _per_layer_heads(dim, depth, heads, head_dim)
        if image_size % patch:
            raise ValueError(f"vit needs image_size divisible by patch ({image_size}, {patch})")
        config: dict[str, object] = {
            "dim": dim,
            "depth": depth,
            "heads": heads if isinstance(heads, int) else list(heads),
            "patch": patch,
            "mlp_ratio": mlp_ratio,
            "image_size": image_size,
            "dropout": dropout,
        }
        if head_dim is not None:
            config["head_dim"] = head_dim
        super().__init__(config, dim, dropout)
        self.grid = image_size // patch
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        hd = head_dim or dim // per_layer[0]
        self.blocks = nn.ModuleList(Block(dim, h, mlp_ratio, hd) for h in per_layer)
        self.norm = nn.LayerNorm(dim)

    @property
    def tap_names(self) -> tuple[str, ...]:
        """``block1`` ... ``blockN``."""
        return tuple(f"block{i + 1}" for i in range(len(self.blocks)))

    def _taps(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        x = self.patch(x)
        n, d, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.pos
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            yield f"block{i + 1}", tokens.transpose(1, 2).reshape(n, d, h, w)

    def _pool(self, last: torch.Tensor) -> torch.Tensor:
        return self.norm(last.mean((2, 3)))
