"""Dynamic batching for asyncio code: concurrent requests share one backend call.

Requests are gathered on the event loop (no thread hop per request); each batch is stacked
into a preallocated buffer and run in one worker thread, so the loop keeps serving meanwhile,
or, where the process has a single core to itself, on the loop itself (``inline``): there the
worker would only compete with the loop for the core and the GIL, and each hand-over costs more
than the request handling it would overlap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.runtime.backend import Backend, Outputs

BatchHook = Callable[[int, float], None]
"""Called on the event loop after each batch with (images in it, seconds the backend took)."""


class BatcherClosed(RuntimeError):
    """The batcher was shut down; the request was not run."""


@dataclass(frozen=True)
class BatcherSettings:
    """``max_batch`` images per backend call; wait at most ``max_wait_ms`` for a batch to fill.

    ``inline`` runs each batch on the event loop's thread instead of a worker thread;
    ``check_finite=False`` skips the backend's NaN/inf check for callers that checked each
    request already (one bad request then fails alone instead of failing its batch).
    """

    max_batch: int = 16
    max_wait_ms: float = 2.0
    inline: bool = False
    check_finite: bool = True

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


@dataclass
class _Pending:
    images: np.ndarray  # n x C x S x S
    future: asyncio.Future[Outputs]


class DynamicBatcher:
    """Group concurrent :meth:`submit` calls into batches run by one worker thread.

    Create and use it inside one running event loop; :meth:`close` (or ``async with``) drains
    what was submitted and stops the worker.
    """

    def __init__(
        self,
        backend: Backend,
        settings: BatcherSettings | None = None,
        *,
        on_batch: BatchHook | None = None,
    ) -> None:
        """Batch for ``backend``; ``on_batch`` receives each batch's size (for metrics)."""
        self.backend = backend
        self.settings = settings or BatcherSettings()
        limit = backend.max_batch
        self._max = min(self.settings.max_batch, limit) if limit else self.settings.max_batch
        s = backend.image_size
        self._shape = (backend.task.input.channels, s, s)
        self._buffer = np.empty((self._max, *self._shape), np.float32)
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._rows = 0
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batcher")

    @property
    def max_batch(self) -> int:
        """The effective maximum batch (the setting, capped by the backend's limit)."""
        return self._max

    def _start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def submit(self, images: np.ndarray) -> Outputs:
        """Infer one image (C x S x S) or a few (n x C x S x S) as part of a batch.

        Raises ValueError for a wrong dtype or shape (nothing else in the batch is affected),
        the backend's error when its batch failed, and :class:`BatcherClosed` after close.
        """
        if self._closed:
            raise BatcherClosed("the batcher is shut down")
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.float32 or images.ndim != 4 or images.shape[1:] != self._shape:
            raise ValueError(
                f"expected float32 images of shape {self._shape} or (n, *{self._shape}), "
                f"got {images.dtype} {images.shape}"
            )
        if len(images) == 0:
            raise ValueError("no images to infer")
        if self._task is None:
            self._start()
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(images, future))
        self._rows += len(images)
        assert self._arrived is not None
        self._arrived.set()
        return await future

    def _take(self) -> list[_Pending]:
        """Pop requests up to max_batch rows (a request larger than that goes alone)."""
        taken = [self._queue.popleft()]
        rows = len(taken[0].images)
        while self._queue and rows + len(self._queue[0].images) <= self._max:
            taken.append(self._queue.popleft())
            rows += len(taken[-1].images)
        self._rows -= rows
        return taken

    def _run(self, batch: list[_Pending]) -> tuple[Outputs, float]:
        """Worker thread (or the loop, inline): stack into the buffer and run the backend."""
        start = time.perf_counter()
        n = sum(len(p.images) for p in batch)
        if len(batch) == 1:
            x = batch[0].images
        else:
            x = self._buffer[:n]
            np.concatenate([p.images for p in batch], out=x)
        check = self.settings.check_finite
        if n <= self._max:
            out = self.backend.infer(x, check_finite=check)
        else:  # one oversized request: chunks of max_batch
            parts = [
                self.backend.infer(x[i : i + self._max], check_finite=check)
                for i in range(0, n, self._max)
            ]
            out = Outputs.concatenate(parts)
        return out, time.perf_counter() - start

    async def _wait_for_more(self) -> None:
        assert self._arrived is not None
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000.0
        while self._rows < self._max and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    async def _loop(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self._rows < self._max and self.settings.max_wait_ms > 0:
                await self._wait_for_more()
            batch = self._take()
            try:
                if self.settings.inline:
                    out, seconds = self._run(batch)
                else:
                    out, seconds = await loop.run_in_executor(self._executor, self._run, batch)
            except BaseException as e:  # every waiter of the batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
                continue
            start = 0
            for p in batch:
                n = len(p.images)
                if not p.future.done():  # a cancelled request simply drops its rows
                    p.future.set_result(out.rows(start, start + n))
                start += n
            if self._on_batch is not None:
                try:
                    self._on_batch(start, seconds)
                except Exception:  # a broken metrics hook must not stop inference
                    self._on_batch = None

    async def close(self) -> None:
        """Stop accepting requests, finish those already submitted, stop the worker."""
        self._closed = True
        if self._task is not None and self._arrived is not None:
            self._arrived.set()
            await self._task
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> DynamicBatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
