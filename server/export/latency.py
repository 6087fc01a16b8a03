"""ONNX Runtime speed on this machine: batch-1 latency and batch-N throughput."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.export.onnx_export import INPUT_NAME
from server.export.scoring import session


@dataclass(frozen=True)
class Speed:
    """Median batch-1 latency (ms) and throughput (images/s) at ``batch``."""

    latency_ms: float
    throughput: float
    batch: int

    def as_dict(self) -> dict[str, float]:
        """Plain mapping for JSON."""
        return {
            "latency_ms_batch1": self.latency_ms,
            "throughput_img_s": self.throughput,
            "throughput_batch": self.batch,
        }


def measure(
    fn: Callable[[np.ndarray], object], size: int, *, batch: int, runs: int, channels: int = 3
) -> Speed:
    """Time ``fn`` (one forward pass) at batch 1 and at ``batch``, after a warm-up."""
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    many = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    for x in (one, many):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(one)
        times.append(time.perf_counter() - t0)
    batches = max(runs // 4, 2)
    t0 = time.perf_counter()
    for _ in range(batches):
        fn(many)
    elapsed = time.perf_counter() - t0
    return Speed(1000 * float(np.median(times)), batches * batch / elapsed, batch)


def onnx_speed(
    path: Path, size: int, *, batch: int = 32, runs: int = 30, threads: int = 0
) -> Speed:
    """ONNX Runtime (CPU provider) speed of the model at ``path``."""
    sess = session(path, threads)
    channels = sess.get_inputs()[0].shape[1]
    return measure(
        lambda x: sess.run(None, {INPUT_NAME: x}),
        size,
        batch=batch,
        runs=runs,
        channels=channels if isinstance(channels, int) else 3,
    )
