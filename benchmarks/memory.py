"""Memory of process trees as benchmarks measure it: PSS (shared pages divided among their
sharers) and RSS summed over a tree and its sessions, sampled in a thread."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class MemorySampler:
    """Samples PSS/RSS summed over process trees (and their sessions) every ``interval`` s."""

    roots: list[int]
    interval: float = 0.5
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, pss, rss, n
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        sessions = set()
        for pid in self.roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                sessions.add(os.getsid(pid))
                for p in [root, *root.children(recursive=True)]:
                    found[p.pid] = p
        # a process that left the tree by setsid/re-parenting still counts while in our sessions
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid not in found and os.getsid(p.pid) in sessions:
                    found[p.pid] = p
        return list(found.values())

    def sample(self) -> None:
        """Take one sample now."""
        pss = rss = 0
        procs = self._processes()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                info = p.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
                self.seen.setdefault(p.pid, p)
        self.samples.append((time.time(), pss, rss, len(procs)))

    def run(self) -> None:
        """Sample until :meth:`stop`."""
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        """End sampling."""
        self._stop.set()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> dict[str, float]:
        """Peak PSS/RSS (MiB) and process count between two times."""
        window = [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]
        mib = 1024 * 1024
        return {
            "peak_pss_mib": round(max((s[1] for s in window), default=0) / mib, 1),
            "peak_rss_mib": round(max((s[2] for s in window), default=0) / mib, 1),
            "peak_processes": max((s[3] for s in window), default=0),
        }
