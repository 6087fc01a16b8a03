"""What every Fovea network is: the task's named outputs from one pass, and named feature taps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from models.task import DR_GRADING, TaskSpec


class FundusNet(nn.Module):
    """Base of the model families.

    Subclasses build ``self.stages`` (modules applied in order; each stage's output is a feature
    tap named in ``tap_names``) and give ``embed_dim``; the base adds one linear head whose
    columns are the task's outputs (:meth:`for_task_`; DR grading until told otherwise). Every
    tap is a (N, C, h, w) map, so projectors and monitors treat CNNs and ViTs alike. A grey task
    (``input.channels`` 1) feeds its one channel to all of the backbone's three.
    """

    family: ClassVar[str] = ""
    backbone_channels: int = 3
    """Channels the backbone's first layer takes."""

    def __init__(self, config: dict[str, Any], embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = dict(config)
        self.embed_dim = embed_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.task: TaskSpec = DR_GRADING
        self.head = nn.Linear(embed_dim, DR_GRADING.head_width)

    def for_task_(self, task: TaskSpec) -> FundusNet:
        """Answer ``task`` from now on, in place: a new head (randomly initialised) when its
        outputs need other widths than the current task's. Returns ``self``."""
        if task.head_width != self.head.out_features:
            fresh = nn.Linear(self.head.in_features, task.head_width)
            self.head = fresh.to(self.head.weight.device)
        self.task = task
        return self

    def _answer(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's columns, split into the task's named outputs."""
        out = self.head(self.dropout(features))
        named: dict[str, torch.Tensor] = {}
        start = 0
        for name, (width,) in self.task.output_shapes().items():
            named[name] = out[:, start : start + width]
            start += width
        return named

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the backbone takes it (a grey image repeated over its channels)."""
        if x.shape[1] == 1 and self.backbone_channels != 1:
            return x.expand(-1, self.backbone_channels, -1, -1)
        return x

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
        last = x = self._input(x)
        for name, last in self._taps(x):
            taps[name] = last
        return self._answer(self._pool(last)), taps

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task's outputs for images (N x C x H x W); for DR grading ``grade_logits``
        (N x 5) and ``gradable_logit`` (N x 1)."""
        return self.forward_taps(x)[0]

    def tap_channels(self, image_size: int) -> dict[str, tuple[int, int, int]]:
        """(C, h, w) of each tap for square inputs of ``image_size`` pixels."""
        was = self.training
        self.eval()
        with torch.no_grad():
            device = next(self.parameters()).device
            shape = (1, self.task.input.channels, image_size, image_size)
            _, taps = self.forward_taps(torch.zeros(shape, device=device))
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
