"""Resumable, parallel decoding of indexed images into fixed-size squares, chunk by chunk.

Each chunk of records is decoded in a bounded pool of worker processes and written atomically
as an image shard ``chunk-NNNNN.npy`` and its record ``chunk-NNNNN.npz`` (which rows were kept,
which skipped and why) in a work directory tagged with the plan's fingerprint; a later run with
the same fingerprint reuses every finished chunk, and a run with another one starts afresh.
Memory holds one chunk at a time.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from models import PreprocessSpec, TaskSpec
from models.datasets import BadImageError, FundusRecord, read_image, write_shard
from server.training.device import Reporter

_JPEG = (".jpg", ".jpeg")
_POOL_FROM = 64
"""Fewer images than this are decoded in this process: starting workers would cost more."""


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: square side, the task (its preprocessing), pool and chunk sizes."""

    size: int
    task: TaskSpec
    skip_bad: bool = False
    workers: int = 4
    chunk: int = 256


def _square(spec: PreprocessSpec, record: FundusRecord) -> np.ndarray | str:
    """``record`` read and squared as ``spec`` says (JPEGs at the smallest DCT scale whose
    crop still holds ``spec.size`` pixels; a field much smaller than the frame is decoded again
    in full), or why it could not be read (decoders raise many types)."""
    try:
        image = read_image(record, at_least=spec.size)
        if spec.field_side(image) < spec.size and record.path.suffix.lower() in _JPEG:
            image = read_image(record)
        return spec.to_square(image)
    except BadImageError as e:
        return str(e)
    except Exception as e:  # a truncated or odd file must name itself, not end the pool
        return f"{record.path}: cannot decode image ({type(e).__name__}: {e})"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so no reader sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _planned(plan: Path) -> str | None:
    try:
        return str(json.loads(plan.read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ChunkStore:
    """The finished chunks of one plan in ``directory``; another plan's chunks are removed."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.dir = directory
        plan = self.dir / "plan.json"
        if self.dir.exists() and _planned(plan) != fingerprint:
            shutil.rmtree(self.dir)  # another source or other options: start again
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(plan, json.dumps({"fingerprint": fingerprint}))

    def chunk(self, number: int) -> Path:
        """The record of chunk ``number`` (kept rows, skipped files)."""
        return self.dir / f"chunk-{number:05d}.npz"

    def shard(self, number: int) -> Path:
        """The image shard of chunk ``number``."""
        return self.dir / f"chunk-{number:05d}.npy"

    def load(self, number: int) -> dict[str, np.ndarray] | None:
        """A finished chunk's record, or None when it (or its shard) is missing or unreadable."""
        path = self.chunk(number)
        if not path.is_file() or not self.shard(number).is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in ("kept", "skipped")}
        except (OSError, ValueError, KeyError, EOFError):
            return None

    def save(self, number: int, images: np.ndarray, record: dict[str, np.ndarray]) -> None:
        """Write one chunk atomically: its shard first, then the record that marks it done."""
        write_shard(self.shard(number), images)
        tmp = self.dir / f"chunk-{number:05d}.tmp.npz"
        np.savez(tmp, **record)  # type: ignore[arg-type]
        tmp.replace(self.chunk(number))


def _decode_chunk(
    decode: Callable[[list[FundusRecord]], Iterator[np.ndarray | str]],
    records: list[FundusRecord],
    start: int,
    options: DecodeOptions,
    tick: Callable[[int], None],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Decode ``records`` (global index from ``start``); a bad file raises unless skipping."""
    images, kept, skipped = [], [], []
    for offset, result in enumerate(decode(records)):
        tick(start + offset + 1)
        if isinstance(result, str):
            if not options.skip_bad:
                raise BadImageError(f"{result} (pass --skip-bad to skip bad files)")
            skipped.append(f"{records[offset].path}\t{result}")
            continue
        images.append(result)
        kept.append(start + offset)
    shape = (0, options.size, options.size, options.task.input.channels)
    stacked = np.stack(images) if images else np.zeros(shape, np.uint8)
    return stacked, {
        "kept": np.array(kept, dtype=np.int64),
        "skipped": np.array(skipped, dtype=np.str_),
    }


def decode_chunks(
    options: DecodeOptions,
    records: list[FundusRecord],
    store: ChunkStore,
    report: Reporter | None = None,
) -> tuple[list[dict[str, np.ndarray]], int]:
    """Every chunk's record (``kept`` record indices, ``skipped`` as ``path<TAB>why``; its
    images are in ``store.shard(number)``), from ``store`` when an earlier run finished it; and
    how many images were reused rather than decoded."""
    spec = PreprocessSpec.for_task(options.task, options.size)
    square = partial(_square, spec)
    chunks, reused = [], 0

    def tick(done: int) -> None:
        if report is not None:
            report("preparing images", done, len(records))

    with contextlib.ExitStack() as stack:
        decode: Callable[[list[FundusRecord]], Iterator[np.ndarray | str]] = partial(map, square)
        if options.workers > 1 and len(records) >= _POOL_FROM:
            # processes, not threads: cropping and copying hold the GIL, and threads gained
            # only 7% over one on two cores; forkserver: no fork of a threaded parent
            context = multiprocessing.get_context("forkserver")
            pool = stack.enter_context(ProcessPoolExecutor(options.workers, mp_context=context))
            decode = partial(pool.map, square, chunksize=8)
        for number, start in enumerate(range(0, len(records), options.chunk)):
            part = records[start : start + options.chunk]
            record = store.load(number)
            if record is None:
                images, record = _decode_chunk(decode, part, start, options, tick)
                store.save(number, images, record)
            else:
                reused += len(part)
                tick(start + len(part))
            chunks.append(record)
    return chunks, reused
