"""Feature alignment: projectors from student taps to teacher taps over a layer mapping."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def auto_layer_map(
    student_taps: dict[str, tuple[int, int, int]],
    teacher_taps: dict[str, tuple[int, int, int]],
    count: int,
) -> dict[str, str]:
    """Pair the deepest ``count`` student taps with teacher taps at the same relative depth."""
    s_names, t_names = list(student_taps), list(teacher_taps)
    count = min(count, len(s_names), len(t_names))
    mapping = {}
    for k in range(count):
        si = len(s_names) - 1 - k
        ti = round((si + 1) / len(s_names) * len(t_names)) - 1
        mapping[s_names[si]] = t_names[max(ti, 0)]
    return dict(reversed(list(mapping.items())))


class Projector(nn.Module):
    """1x1 convolution from student channels to teacher channels, then resize to the teacher."""

    def __init__(self, student_channels: int, teacher_channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
            nn.BatchNorm2d(teacher_channels),
        )
        self.size = size

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Student feature map (N, Cs, h, w) to the teacher's (N, Ct, H, W); ``size`` is (H, W)
        when it is not the one the projector was made for (token sequences vary in length)."""
        y = self.proj(x)
        size = size or self.size
        if tuple(y.shape[-2:]) != size:
            y = F.adaptive_avg_pool2d(y, size)
        return y


def centred(x: torch.Tensor) -> torch.Tensor:
    """Features with each channel's batch-and-space mean removed, flattened per sample."""
    return (x - x.mean((0, 2, 3), keepdim=True)).flatten(1)


class FeatureAligner(nn.Module):
    """The projectors of one layer mapping, and the feature loss over it."""

    def __init__(
        self,
        layer_map: dict[str, str],
        student_taps: dict[str, tuple[int, int, int]],
        teacher_taps: dict[str, tuple[int, int, int]],
        loss: Literal["cosine", "mse"] = "cosine",
    ) -> None:
        super().__init__()
        for s, t in layer_map.items():
            if s not in student_taps:
                raise ValueError(
                    f"layer_map names student tap {s!r}; the student has {', '.join(student_taps)}"
                )
            if t not in teacher_taps:
                raise ValueError(
                    f"layer_map names teacher tap {t!r}; the teacher has {', '.join(teacher_taps)}"
                )
        self.layer_map = dict(layer_map)
        self.loss_kind = loss
        self.projectors = nn.ModuleDict(
            {
                s.replace(".", "_"): Projector(
                    student_taps[s][0], teacher_taps[t][0], teacher_taps[t][1:]
                )
                for s, t in layer_map.items()
            }
        )

    def project(
        self,
        student_taps: dict[str, torch.Tensor],
        like: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Projected student features, keyed by teacher tap (sized as ``like``'s maps, the
        teacher's taps on the same batch, when given)."""
        return {
            t: self.projectors[s.replace(".", "_")](
                student_taps[s], None if like is None else tuple(like[t].shape[-2:])
            )
            for s, t in self.layer_map.items()
        }

    def loss(
        self,
        student_taps: dict[str, torch.Tensor],
        teacher_taps: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Mean feature distance over the mapped layers; ``masks`` (teacher tap -> N x 1 x H x W,
        0 at positions that do not count, such as padding tokens) zero those positions first."""
        losses = []
        for t, y in self.project(student_taps, teacher_taps).items():
            target = teacher_taps[t].detach().float()
            y = y.float()
            if masks is not None and t in masks:
                y, target = y * masks[t], target * masks[t]
            if self.loss_kind == "cosine":
                losses.append(1.0 - F.cosine_similarity(centred(y), centred(target), dim=1).mean())
            else:
                scale = target.var(unbiased=False).clamp_min(1e-6)
                losses.append(F.mse_loss(y, target) / scale)
        return torch.stack(losses).mean()
