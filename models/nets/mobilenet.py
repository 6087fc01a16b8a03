"""MobileNetV2-style students: inverted residuals with depthwise convolutions."""

from __future__ import annotations

import torch
from torch import nn

from models.nets.base import StagedNet
from models.nets.resnet import conv_bn


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1))
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inverted residual block."""
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(StagedNet):
    """A stem then one stage per entry of ``channels``, each halving the resolution.

    Taps: ``stem`` and ``stage1`` .. ``stageN``.
    """

    family = "mobilenetv2"

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (16, 24, 32, 64),
        depths: tuple[int, ...] | list[int] = (1, 2, 2, 2),
        expand: int = 4,
        stem: int = 16,
        dropout: float = 0.1,
    ) -> None:
        channels = tuple(int(c) for c in channels)
        depths = tuple(int(d) for d in depths)
        if len(channels) != len(depths) or not channels or min(depths) < 1:
            raise ValueError("mobilenetv2 needs one depth (>= 1) per stage channel count")
        super().__init__(
            {
                "channels": list(channels),
                "depths": list(depths),
                "expand": expand,
                "stem": stem,
                "dropout": dropout,
            },
            channels[-1],
            dropout,
        )
        self.stem = conv_bn(3, stem, 3, 2)
        stages = []
        cin = stem
        for i, (cout, depth) in enumerate(zip(channels, depths, strict=True)):
            blocks = [
                InvertedResidual(
                    cin if j == 0 else cout, cout, 2 if (j == 0 and i > 0) else 1, expand
                )
                for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
