"""Label-preserving augmentation on batches: flips, rotations, colour jitter, camera blur and
noise, random erasing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from server.training.config import AugmentConfig


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment images (N, 3, H, W) in [0, 1]; every draw comes from ``gen`` (reproducible)."""
    n = x.shape[0]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    if cfg.flips:
        h = torch.rand(n, generator=gen) < 0.5
        v = torch.rand(n, generator=gen) < 0.5
        x = torch.where(h[:, None, None, None], x.flip(3), x)
        x = torch.where(v[:, None, None, None], x.flip(2), x)
    if cfg.rot90:
        k = torch.randint(0, 4, (n,), generator=gen)
        for quarter in (1, 2, 3):
            x = torch.where((k == quarter)[:, None, None, None], x.rot90(quarter, (2, 3)), x)
    if cfg.rotate_degrees > 0:
        angle = uniform(-cfg.rotate_degrees, cfg.rotate_degrees, n) * (math.pi / 180)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros(n)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.brightness > 0:
        x = x * uniform(1 - cfg.brightness, 1 + cfg.brightness, n, 1, 1, 1)
    if cfg.contrast > 0:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - cfg.contrast, 1 + cfg.contrast, n, 1, 1, 1) + mean
    if cfg.saturation > 0:
        grey = x.mean(1, keepdim=True)
        x = (x - grey) * uniform(1 - cfg.saturation, 1 + cfg.saturation, n, 1, 1, 1) + grey
    if cfg.blur > 0:
        x = _camera_blur(x, uniform(0, cfg.blur, n, 1, 1, 1))
    if cfg.noise > 0:
        x = x + torch.randn(x.shape, generator=gen) * uniform(0, cfg.noise, n, 1, 1, 1)
    if cfg.erase_p > 0:
        x = _random_erase(x, cfg.erase_p, gen)
    return x.clamp(0, 1)


def _camera_blur(x: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Blend each image towards its 3x3 binomial blur by ``share`` (N, 1, 1, 1).

    Sites differ in optics and sensor more than in anything else the synthetic generator
    varies; a student that never saw softer or noisier images than its training cameras'
    misplaces its referral scores on a new camera even where it ranks cases as well as the
    teacher.
    """
    k = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype)
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 3, 3)
    soft = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    return x + (soft - x) * share


def _random_erase(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Blank one rectangle (2-12% of the image) in a share ``p`` of the images.

    The patch takes the image's mean colour with faint noise: filling it with full-range noise
    would paint lesion-like dots and change what the image shows.
    """
    n, _, h, w = x.shape
    hit = torch.rand(n, generator=gen) < p
    area = 0.02 + 0.10 * torch.rand(n, generator=gen)
    aspect = torch.exp((torch.rand(n, generator=gen) - 0.5) * 1.2)
    eh = (torch.sqrt(area * aspect) * h).clamp(1, h).long()
    ew = (torch.sqrt(area / aspect) * w).clamp(1, w).long()
    top = (torch.rand(n, generator=gen) * (h - eh + 1).float()).long()
    left = (torch.rand(n, generator=gen) * (w - ew + 1).float()).long()
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    box = (
        (rows >= top[:, None, None])
        & (rows < (top + eh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ew)[:, None, None])
        & hit[:, None, None]
    )
    fill = x.mean((2, 3), keepdim=True) + 0.02 * torch.randn(x.shape, generator=gen)
    return torch.where(box[:, None], fill, x)
