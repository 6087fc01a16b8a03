"""ResNet-style CNNs: the wide teacher and the narrow student are one family, two configs."""

from __future__ import annotations

import torch
from torch import nn

from models.nets.base import StagedNet


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(StagedNet):
    """Stem, then stages of basic blocks doubling the width as they halve the resolution.

    Taps: ``stem`` and ``stage1`` .. ``stageN``.
    """

    family = "resnet"

    def __init__(
        self,
        width: int = 32,
        depths: tuple[int, ...] | list[int] = (2, 2, 2, 2),
        dropout: float = 0.1,
    ) -> None:
        depths = tuple(int(d) for d in depths)
        if width < 4 or not depths or min(depths) < 1:
            raise ValueError(f"resnet needs width >= 4 and depths >= 1, got {width}, {depths}")
        channels = [width * 2**i for i in range(len(depths))]
        super().__init__(
            {"width": width, "depths": list(depths), "dropout": dropout}, channels[-1], dropout
        )
        self.stem = conv_bn(3, width, 3, 2)
        stages = []
        cin = width
        for i, (cout, depth) in enumerate(zip(channels, depths, strict=True)):
            blocks = [
                BasicBlock(cin if j == 0 else cout, cout, 2 if (j == 0 and i > 0) else 1)
                for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
