"""Batches of images read ahead by DataLoader worker processes, so memory stays bounded at any
dataset size.

Images in memory are indexed in this process. Sharded images on disk
(:class:`~models.datasets.ShardedImages`, what ``fovea data prepare`` writes) are read by worker
processes a few batches ahead of the model: each worker holds only the batches it is reading,
and the kernel's page cache keeps the files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models import images_per_batch
from models.datasets import ImageArray, ShardedImages


def eval_batch_size(size: int, cap: int = 256) -> int:
    """A batch size for inference on ``size``-px images that keeps a batch to about 4 M pixels
    (256 images at 128 px, 28 at 384 px)."""
    return images_per_batch(size, cap=cap)


def auto_workers(images: ImageArray) -> int:
    """Worker processes for reading ``images``: none in memory, up to two for shards on disk."""
    if not isinstance(images, ShardedImages):
        return 0
    return max(1, min(2, (os.cpu_count() or 1) - 1))


class _Rows(Dataset[tuple[np.ndarray, torch.Tensor]]):
    """``dataset[rows]`` is ``(rows, images)``: the uint8 (B, H, W, C) images of those rows."""

    def __init__(self, images: ImageArray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        return rows, torch.from_numpy(np.ascontiguousarray(self.images[rows]))


def _as_read(item: Any) -> Any:
    return item  # the default would turn the rows into a tensor


def read_batches(
    images: ImageArray, batches: Sequence[np.ndarray], workers: int | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(rows, uint8 images (B, H, W, C)) for each index array of ``batches``, in order.

    ``workers`` processes read ahead (two batches each); None picks :func:`auto_workers`.
    """
    rows = _Rows(images)
    workers = auto_workers(images) if workers is None else workers
    if workers == 0 or len(batches) < 2:
        for batch in batches:
            yield rows[batch]
        return
    loader = DataLoader(
        rows,
        sampler=batches,
        batch_size=None,
        collate_fn=_as_read,
        num_workers=workers,
        prefetch_factor=2,
        generator=torch.Generator(),  # its workers' seeds: leave the training's RNG untouched
    )
    yield from loader


def row_batches(count: int, batch_size: int) -> list[np.ndarray]:
    """Rows ``0..count-1`` in order, ``batch_size`` at a time."""
    return [np.arange(i, min(i + batch_size, count)) for i in range(0, count, batch_size)]
