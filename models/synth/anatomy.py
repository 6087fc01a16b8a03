"""Retinal anatomy for the synthetic generator: vessel trees and new-vessel tufts.

Drawing a branching tree is recursive and does not vectorise, so trees are drawn once per
(size, seed) into a small bank of templates that every image then picks from.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

DISC_X = 0.42
"""Horizontal position of the optic disc of a right eye, in field coordinates (-1..1)."""

_BANK = 24


def _splat(canvas: np.ndarray, pts: np.ndarray, weight: np.ndarray) -> None:
    """Add ``weight`` at each point (N x 2, field coordinates) of ``canvas``."""
    size = canvas.shape[0]
    ij = np.round((pts + 1.0) * 0.5 * (size - 1)).astype(np.int64)
    ok = (ij >= 0).all(1) & (ij < size).all(1)
    np.add.at(canvas, (ij[ok, 1], ij[ok, 0]), weight[ok])


def _grow(
    rng: np.random.Generator,
    start: np.ndarray,
    angle: float,
    width: float,
    length: float,
    depth: int,
    out: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Grow one vessel segment as a gently curving polyline, then branch."""
    steps = max(int(length * 120), 4)
    turn = rng.normal(0.0, 0.9 / steps, steps).cumsum() + angle
    step = length / steps
    pts = start + np.cumsum(np.stack([np.cos(turn), np.sin(turn)], 1) * step, 0)
    out.append((pts, np.full(steps, width)))
    if depth == 0 or width < 0.25:
        return
    for side in (-1.0, 1.0):
        if side > 0 or rng.random() < 0.85:
            split = rng.uniform(0.55, 0.95)
            k = min(int(split * steps), steps - 1)
            _grow(
                rng,
                pts[k],
                float(turn[k] + side * rng.uniform(0.35, 0.8)),
                width * rng.uniform(0.6, 0.8),
                length * rng.uniform(0.5, 0.75),
                depth - 1,
                out,
            )


def _tree(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The four arcades of a right eye's vessel tree, from the disc."""
    disc = np.array([DISC_X, rng.normal(0, 0.03)])
    segments: list[tuple[np.ndarray, np.ndarray]] = []
    # temporal arcades arch around the macula; nasal vessels run straight and short
    for angle, length in ((2.55, 0.75), (-2.55, 0.75), (0.55, 0.45), (-0.55, 0.45)):
        _grow(rng, disc, angle + rng.normal(0, 0.12), 1.0, length, 4, segments)
    return segments


def _rasterise(size: int, segments: list[tuple[np.ndarray, np.ndarray]], beads: bool) -> np.ndarray:
    """Vessel opacity map (size x size, 0-1) from polylines, thick vessels blurred wider."""
    maps = []
    for lo, hi, sigma in ((0.0, 0.45, 0.25), (0.45, 0.75, 0.45), (0.75, 2.0, 0.7)):
        canvas = np.zeros((size, size), np.float32)
        for pts, width in segments:
            sel = (width > lo) & (width <= hi)
            if not sel.any():
                continue
            dense = np.repeat(pts[sel], 3, axis=0)
            w = np.repeat(width[sel], 3)
            if beads and lo >= 0.45:
                # venous beading: calibre swells and narrows along the vein
                phase = np.arange(len(w)) * (2 * np.pi / 18)
                w = w * (0.4 + 2.2 * np.maximum(np.sin(phase), 0) ** 4)
            _splat(canvas, dense, w)
        scale = size / 128.0
        blurred = gaussian_filter(canvas, sigma * max(scale, 0.5) + 0.2)
        maps.append(blurred)
    m = np.maximum.reduce(maps)
    return np.clip(m / (np.percentile(m[m > 0], 90) + 1e-6), 0, 1).astype(np.float32) ** 1.5


@lru_cache(maxsize=8)
def vessel_bank(size: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Vessel maps of right eyes (bank x size x size): normal, and the same trees beaded."""
    rng = np.random.default_rng(seed)
    trees = [_tree(rng) for _ in range(_BANK)]
    normal = np.stack([_rasterise(size, t, beads=False) for t in trees])
    beaded = np.stack([_rasterise(size, t, beads=True) for t in trees])
    return normal, beaded


@lru_cache(maxsize=8)
def new_vessel_bank(size: int, seed: int = 11) -> np.ndarray:
    """Tufts of fine, tortuous new vessels (bank x k x k, 0-1), k about 1/6 of the field."""
    rng = np.random.default_rng(seed)
    k = max(size // 6 | 1, 7)
    tufts = []
    for _ in range(_BANK):
        canvas = np.zeros((k, k), np.float32)
        for _loop in range(rng.integers(3, 7)):
            t = np.linspace(0, 2 * np.pi * rng.uniform(1, 2.5), 200)
            r = rng.uniform(0.2, 0.8) * (1 + 0.3 * np.sin(t * rng.integers(3, 7)))
            c = rng.uniform(-0.3, 0.3, 2)
            pts = np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], 1)
            _splat(canvas, pts, np.ones(len(pts)))
        canvas = gaussian_filter(canvas, 0.35 * max(size / 128, 0.6))
        tufts.append(np.clip(canvas / (canvas.max() + 1e-6) * 1.6, 0, 1))
    return np.stack(tufts)
