"""Heavy request work off the event loop: a bounded thread pool (decoding and checking uploads,
inflating and parsing bodies) with admission in front of it (past its capacity a request is
answered 503 with Retry-After)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

from edge_agent.service.errors import ApiError

P = ParamSpec("P")
T = TypeVar("T")


class WorkPool:
    """``workers`` threads for one kind of work; at most ``workers + queue`` requests admitted.

    Admission is counted on the event loop (no lock needed) and refuses at once instead of
    queueing without bound, so a burst of camera-size uploads or compressed bodies cannot pile
    up memory or starve the loop that answers health checks.
    """

    def __init__(
        self, workers: int, queue: int, retry_after_s: int = 1, name: str = "work"
    ) -> None:
        if workers < 1 or queue < 0 or retry_after_s < 1:
            raise ValueError(
                f"a work pool needs workers >= 1, queue >= 0 and retry_after_s >= 1, got "
                f"{workers}, {queue} and {retry_after_s}"
            )
        self.workers, self.capacity = workers, workers + queue
        self.retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._inside = 0
        self._name = name

    @property
    def inside(self) -> int:
        """Requests admitted and not yet finished."""
        return self._inside

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one of the pool's places for a request; ApiError(503) when all are taken."""
        if self._inside >= self.capacity:
            raise ApiError(
                503,
                f"the agent has {self._inside} {self._name} requests under way already (its "
                "capacity); "
                f"retry in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self._inside += 1
        try:
            yield
        finally:
            self._inside -= 1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on one of the pool's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop the threads once their current work is done; queued work is cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["WorkPool"]
