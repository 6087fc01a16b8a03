"""What every Fovea network is: two named outputs from one pass, and named feature taps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from models.task import NUM_GRADES


class FundusNet(nn.Module):
    """Base of the model families.

    Subclasses build ``self.stages`` (modules applied in order; each stage's output is a feature
    tap named in ``tap_names``) and give ``embed_dim``; the base adds the heads. Every tap is a
    (N, C, h, w) map, so projectors and monitors treat CNNs and ViTs alike.
    """

    family: ClassVar[str] = ""

    def __init__(self, config: dict[str, Any], embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = dict(config)
        self.embed_dim = embed_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, NUM_GRADES + 1)

    @property
    def tap_names(self) -> tuple[str, ...]:
        """Names of the feature taps, shallow to deep."""
        raise NotImplementedError

    def _taps(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    def _pool(self, last: torch.Tensor) -> torch.Tensor:
        return last.mean((2, 3))

    def forward_taps(
        self, x: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Outputs and every feature tap, from one pass."""
        taps: dict[str, torch.Tensor] = {}
        last = x
        for name, last in self._taps(x):
            taps[name] = last
        out = self.head(self.dropout(self._pool(last)))
        return {"grade_logits": out[:, :NUM_GRADES], "gradable_logit": out[:, NUM_GRADES:]}, taps

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``grade_logits`` (N x 5) and ``gradable_logit`` (N x 1) for images (N x 3 x H x W)."""
        return self.forward_taps(x)[0]

    def tap_channels(self, image_size: int) -> dict[str, tuple[int, int, int]]:
        """(C, h, w) of each tap for square inputs of ``image_size`` pixels."""
        was = self.training
        self.eval()
        with torch.no_grad():
            device = next(self.parameters()).device
            _, taps = self.forward_taps(torch.zeros(1, 3, image_size, image_size, device=device))
        self.train(was)
        return {k: (v.shape[1], v.shape[2], v.shape[3]) for k, v in taps.items()}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included)."""
    return sum(p.numel() for p in model.parameters())


class StagedNet(FundusNet):
    """A CNN made of ``self.stem`` then ``self.stages``; taps ``stem``, ``stage1`` ...."""

    stem: nn.Module
    stages: nn.ModuleList

    @property
    def tap_names(self) -> tuple[str, ...]:
        """``stem``, ``stage1`` ... ``stageN``."""
        return ("stem", *(f"stage{i + 1}" for i in range(len(self.stages))))

    def _taps(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        x = self.stem(x)
        yield "stem", x
        for i, stage in enumerate(self.stages):
            x = stage(x)
            yield f"stage{i + 1}", x
