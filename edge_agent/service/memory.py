"""The agent's memory for request work: one budget for bodies in flight and image decodes, and
an allocator that gives large buffers back to the system when they are freed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20
"""Allocations from this size up are mapped and unmapped on their own: a decoded photograph or
a request body goes back to the system as soon as it is freed, instead of staying in a heap."""


class MemoryBudget:
    """A count of bytes that request work may hold at once (thread-safe).

    Work reserves what it will hold before it starts and releases it when done; a reservation
    that would pass ``limit`` is refused, and the caller answers 503 (or 413 when the work
    alone is larger than the whole budget).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"memory budget must be >= 1 byte, got {limit}")
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        return self._used

    def try_reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes if they fit beside what is reserved; False when they do not."""
        with self._lock:
            if self._used + size > self.limit:
                return False
            self._used += size
            return True

    def release(self, size: int) -> None:
        """Give back ``size`` reserved bytes."""
        with self._lock:
            self._used = max(0, self._used - size)


def default_budget(physical: int | None = None) -> int:
    """Bytes for request work when the configuration names none: an eighth of the device's
    memory, between 64 and 384 MiB (a 32 GB AGX Xavier gets 384 MiB: one 24-megapixel PNG
    decode, about 288 MiB, beside the camera JPEGs of normal screening)."""
    if physical is None:
        try:
            physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            physical = 2 << 30
    return max(64 << 20, min(384 << 20, physical // 8))


def tune_allocator() -> bool:
    """Have glibc map large allocations on their own (freed ones are unmapped at once) and keep
    few malloc arenas, so memory taken by a burst of uploads returns after it; False where the
    C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    fixed = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    mallopt(_M_ARENA_MAX, 2)
    return fixed


__all__ = ["MMAP_THRESHOLD", "MemoryBudget", "default_budget", "tune_allocator"]
