"""Images in ``.npy`` shards on disk, read row by row when asked for, never all at once.

A prepared site at clinical scale does not fit in memory (88 k photographs at 512 px are 69 GB),
so ``fovea data prepare`` writes its images as shards ``images-NNNNN.npy`` (standard ``.npy``
files, uint8 N x H x W x C, which ``np.load(..., mmap_mode="r")`` maps too). :class:`ShardedImages`
reads the rows it is indexed with through ``os.pread``, so what a reader holds is the batch it
asked for (the kernel's page cache keeps the rest, shared and reclaimable), and each process
(a DataLoader worker, a torchrun rank) opens its own file handles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _header(path: Path) -> tuple[tuple[int, ...], int]:
    """(shape, data offset) of a uint8 C-order ``.npy`` file; ValueError names the file."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npy image shard ({e})") from None
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(
            f"{path}: an image shard holds uint8 (N, H, W, C) in C order, got {dtype} {shape}"
        )
    return tuple(int(s) for s in shape), offset


class ShardedImages:
    """uint8 images (N, H, W, C) spread over ``.npy`` shards, read on demand.

    Indexing with an int gives one image; with a slice, an index array or a boolean mask, a
    new in-memory array of those rows. :meth:`take` and :meth:`concat` give lazy views instead.
    """

    def __init__(
        self,
        shards: Sequence[Path],
        rows: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if not shards:
            raise ValueError("no image shards given")
        self.shards = [Path(p) for p in shards]
        headers = [_header(p) for p in self.shards]
        shapes = {h[0][1:] for h in headers}
        if len(shapes) != 1:
            raise ValueError(f"image shards differ in image shape: {sorted(shapes)}")
        self.image_shape: tuple[int, ...] = shapes.pop()
        self._offsets = [h[1] for h in headers]
        self._lengths = [h[0][0] for h in headers]
        if rows is None:
            shard = np.repeat(np.arange(len(headers)), self._lengths)
            within = np.concatenate([np.arange(n) for n in self._lengths])
            rows = (shard.astype(np.int32), within.astype(np.int64))
        self._shard, self._within = rows
        self._files: dict[int, int] = {}
        self._pid = os.getpid()

    # ------------------------------------------------------------------- what it looks like
    @property
    def shape(self) -> tuple[int, ...]:
        """(N, H, W, C)."""
        return (len(self._shard), *self.image_shape)

    @property
    def ndim(self) -> int:
        """Always 4."""
        return 4

    @property
    def dtype(self) -> np.dtype[np.uint8]:
        """Always uint8."""
        return np.dtype(np.uint8)

    @property
    def nbytes(self) -> int:
        """Bytes of all rows, were they read."""
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self._shard)

    def shard_of(self) -> np.ndarray:
        """The shard number of every row."""
        return self._shard.copy()

    # ------------------------------------------------------------------------------ views
    def take(self, index: np.ndarray | slice) -> ShardedImages:
        """The rows ``index`` selects (an index array, boolean mask or slice), unread."""
        view = ShardedImages.__new__(ShardedImages)
        view.__dict__.update(self.__dict__)
        view._shard, view._within = self._shard[index], self._within[index]
        view._files, view._pid = {}, os.getpid()
        return view

    @staticmethod
    def concat(parts: Sequence[ShardedImages]) -> ShardedImages:
        """All rows of ``parts`` in order, unread."""
        shards: list[Path] = []
        numbers, within = [], []
        for part in parts:
            known = {p: i for i, p in enumerate(shards)}
            remap = np.array([known.setdefault(p, len(known)) for p in part.shards], np.int32)
            shards.extend(p for p in part.shards if p not in shards)
            numbers.append(remap[part._shard])
            within.append(part._within)
        return ShardedImages(shards, (np.concatenate(numbers), np.concatenate(within)))

    # ------------------------------------------------------------------------------ reads
    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors are not ours
            self._files, self._pid = {}, os.getpid()
        fd = self._files.get(shard)
        if fd is None:
            fd = self._files[shard] = os.open(self.shards[shard], os.O_RDONLY)
        return fd

    def _read(self, rows: np.ndarray, out: np.ndarray) -> None:
        item = int(np.prod(self.image_shape))
        for k, row in enumerate(rows):
            shard, within = int(self._shard[row]), int(self._within[row])
            offset = self._offsets[shard] + within * item
            view = memoryview(out[k].reshape(-1))
            got = os.preadv(self._fd(shard), [view], offset)
            if got != item:
                raise OSError(f"{self.shards[shard]}: short read at row {within} (truncated?)")

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} is outside {len(self)} images")
            out = np.empty((1, *self.image_shape), np.uint8)
            self._read(np.array([index]), out)
            return out[0]
        rows = np.arange(len(self))[key]
        out = np.empty((len(rows), *self.image_shape), np.uint8)
        self._read(rows, out)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def close(self) -> None:
        """Close this process's file handles (reads reopen them)."""
        for fd in self._files.values():
            os.close(fd)
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}, "_pid": -1}

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in getattr(self, "_files", {}).values():
                os.close(fd)


def write_shard(path: Path, images: np.ndarray) -> Path:
    """Write one shard (uint8 N x H x W x C) atomically and return its path."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"a shard holds uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(images), allow_pickle=False)
    tmp.replace(path)
    return path
