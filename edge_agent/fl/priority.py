"""Training yields to screening: fewer threads, a nice level, and a pause while the agent is busy.

The busy signal is a file, ``ROOT/run/busy``, whose modification time the screening service
refreshes while requests are in flight; training pauses between batches while it is fresh.
A plain file keeps the inference path free of this package (and of torch) and works across
processes and restarts; a missing file means "not busy".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "BUSY_FILE",
    "BusyFile",
    "BusySignal",
    "lower_priority",
    "mark_busy",
    "pause_while_busy",
]

BUSY_FILE = Path("run") / "busy"


class BusySignal(Protocol):
    """Whether screening currently needs the device."""

    def is_busy(self) -> bool:
        """True while training should wait."""
        ...


@dataclass(frozen=True)
class BusyFile:
    """Busy while ``path`` was touched less than ``window_s`` seconds ago."""

    path: Path
    window_s: float = 2.0

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"busy window must be > 0 seconds, got {self.window_s}")

    @classmethod
    def for_root(cls, root: Path, window_s: float = 2.0) -> BusyFile:
        """The busy file of a device root (``ROOT/run/busy``)."""
        return cls(Path(root) / BUSY_FILE, window_s)

    def is_busy(self) -> bool:
        """True while the file is fresh."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        return age < self.window_s


def mark_busy(root: Path) -> None:
    """Refresh ``ROOT/run/busy`` (what the screening service calls per request)."""
    path = Path(root) / BUSY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def pause_while_busy(
    signal: BusySignal,
    *,
    poll_s: float = 0.2,
    max_wait_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Block while ``signal`` says busy (at most ``max_wait_s``); returns the seconds waited."""
    waited = 0.0
    while waited < max_wait_s and signal.is_busy():
        sleep(poll_s)
        waited += poll_s
    return waited


def lower_priority(threads: int = 1, niceness: int = 10) -> None:
    """Run this process's training at low priority: ``threads`` torch threads, nice +niceness.

    Raising the nice value is allowed to any process; failures (exotic platforms) are ignored
    because they only cost screening latency, never correctness.
    """
    if threads < 1:
        raise ValueError(f"training threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
    if niceness > 0 and hasattr(os, "nice"):
        try:
            current = os.nice(0)
            if current < niceness:
                os.nice(niceness - current)
        except OSError:
            pass
