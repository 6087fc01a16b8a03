"""DynamicBatcher: grouping, max wait, per-request errors, batch errors, hook, shutdown."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.runtime import (
    BatcherClosed,
    BatcherSettings,
    DynamicBatcher,
    OrtBackend,
    Outputs,
    create_backend,
    register_backend,
)
from edge_agent.runtime.backend import Backend


@register_backend("test-recording")
class Recording(Backend):
    """Echoes each image's first pixel as its grade logits; records batch sizes; can fail."""

    def __init__(self, model_path: Path, precision: str, *, image_size: int) -> None:
        super().__init__(model_path, precision, image_size)
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.fail = False
        self.delay = 0.0

    def _run(self, images: np.ndarray) -> Outputs:
        self.batches.append(len(images))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("engine exploded")
        first = images[:, 0, 0, 0].astype(np.float32)
        return Outputs(np.repeat(first[:, None], 5, 1), first[:, None].copy())


def _recording() -> Recording:
    b = create_backend("test-recording", Path("none"), "fp32", image_size=8)
    assert isinstance(b, Recording)
    return b


def _image(value: float) -> np.ndarray:
    return np.full((3, 8, 8), value, np.float32)


def test_concurrent_requests_are_grouped_and_each_gets_its_row() -> None:
    backend = _recording()
    sizes: list[int] = []

    async def main() -> list[Outputs]:
        async with DynamicBatcher(
            backend,
            BatcherSettings(max_batch=8, max_wait_ms=50),
            on_batch=lambda n, s: sizes.append(n),
        ) as batcher:
            return await asyncio.gather(*(batcher.submit(_image(i)) for i in range(20)))

    results = asyncio.run(main())
    assert [float(r.gradable_logit[0, 0]) for r in results] == [float(i) for i in range(20)]
    assert all(len(r) == 1 for r in results)
    assert backend.batches == [8, 8, 4] and sizes == [8, 8, 4]
    assert len(backend.threads) == 1 and threading.get_ident() not in backend.threads


def test_a_lone_request_waits_at_most_max_wait() -> None:
    backend = _recording()

    async def main() -> float:
        async with DynamicBatcher(backend, BatcherSettings(max_batch=8, max_wait_ms=30)) as b:
            t = time.perf_counter()
            await b.submit(_image(1))
            return time.perf_counter() - t

    elapsed = asyncio.run(main())
    assert 0.025 <= elapsed < 0.5
    assert backend.batches == [1]


def test_multi_image_requests_stay_together_and_oversized_ones_are_chunked() -> None:
    backend = _recording()

    async def main() -> tuple[Outputs, Outputs, Outputs]:
        async with DynamicBatcher(backend, BatcherSettings(max_batch=4, max_wait_ms=5)) as b:
            pair = np.stack([_image(1), _image(2)])
            big = np.stack([_image(i) for i in range(10)])
            return await asyncio.gather(b.submit(pair), b.submit(_image(3)), b.submit(big))

    pair, one, big = asyncio.run(main())
    assert pair.gradable_logit[:, 0].tolist() == [1, 2] and one.gradable_logit[0, 0] == 3
    assert big.gradable_logit[:, 0].tolist() == list(range(10))
    assert backend.batches == [3, 4, 4, 2]


def test_a_backend_error_reaches_every_waiter_and_the_batcher_recovers() -> None:
    backend = _recording()
    backend.fail = True

    async def main() -> tuple[list[object], Outputs]:
        async with DynamicBatcher(backend, BatcherSettings(max_batch=4, max_wait_ms=20)) as b:
            got = await asyncio.gather(
                *(b.submit(_image(i)) for i in range(3)), return_exceptions=True
            )
            backend.fail = False
            return got, await b.submit(_image(7))

    errors, after = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) and "exploded" in str(e) for e in errors)
    assert after.gradable_logit[0, 0] == 7


def test_a_bad_request_fails_alone() -> None:
    backend = _recording()

    async def main() -> list[object]:
        async with DynamicBatcher(backend, BatcherSettings(max_batch=4, max_wait_ms=20)) as b:
            return await asyncio.gather(
                b.submit(_image(1)),
                b.submit(np.zeros((3, 9, 9), np.float32)),
                b.submit(_image(2).astype(np.float64)),
                b.submit(_image(3)),
                return_exceptions=True,
            )

    ok1, bad_shape, bad_dtype, ok2 = asyncio.run(main())
    assert isinstance(bad_shape, ValueError) and isinstance(bad_dtype, ValueError)
    assert isinstance(ok1, Outputs) and isinstance(ok2, Outputs)
    assert backend.batches == [2]


def test_close_drains_pending_then_refuses() -> None:
    backend = _recording()
    backend.delay = 0.02

    async def main() -> list[Outputs]:
        b = DynamicBatcher(backend, BatcherSettings(max_batch=2, max_wait_ms=1000))
        tasks = [asyncio.create_task(b.submit(_image(i))) for i in range(5)]
        await asyncio.sleep(0)
        await b.close()
        with pytest.raises(BatcherClosed):
            await b.submit(_image(9))
        return [t.result() for t in tasks]

    t = time.perf_counter()
    results = asyncio.run(main())
    assert time.perf_counter() - t < 0.9, "close must not wait for max_wait to fill a batch"
    assert [float(r.gradable_logit[0, 0]) for r in results] == [0, 1, 2, 3, 4]


def test_batching_keeps_throughput_of_a_real_model(tiny_export: Path) -> None:
    """16 concurrent submitters fill whole batches and keep most of the raw throughput.

    The tiny model runs a batch of 16 in well under a millisecond, so this is the worst case
    for the batcher's fixed costs (about 15 us per request and one thread hop per batch).
    """
    size = json.loads((tiny_export / "export.json").read_text())["preprocess"]["size"]
    backend = OrtBackend(tiny_export / "model.fp32.onnx", "fp32", image_size=size, threads=1)
    x = np.random.default_rng(0).standard_normal((16, 3, size, size)).astype(np.float32)
    backend.infer(x)
    n_batches = 60
    t = time.perf_counter()
    for _ in range(n_batches):
        backend.infer(x)
    raw = 16 * n_batches / (time.perf_counter() - t)

    async def client(b: DynamicBatcher, i: int) -> None:
        for _ in range(n_batches):
            out = await b.submit(x[i])
            assert out.grade_logits.shape == (1, 5)

    async def main() -> float:
        async with DynamicBatcher(
            backend,
            BatcherSettings(max_batch=16, max_wait_ms=2),
            on_batch=lambda n, s: sizes.append(n),
        ) as b:
            t = time.perf_counter()
            await asyncio.gather(*(client(b, i) for i in range(16)))
            return 16 * n_batches / (time.perf_counter() - t)

    sizes: list[int] = []
    batched = asyncio.run(main())
    assert np.mean(sizes) >= 12, sizes
    assert batched > 0.3 * raw, f"batched {batched:.0f} img/s vs raw {raw:.0f} img/s"


def test_inline_batches_run_on_the_loop_and_skip_the_finite_check_when_told() -> None:
    backend = _recording()
    nan = np.full((3, 8, 8), np.nan, np.float32)

    async def main() -> list[Outputs]:
        settings = BatcherSettings(max_batch=8, max_wait_ms=0, inline=True, check_finite=False)
        async with DynamicBatcher(backend, settings) as b:
            return await asyncio.gather(b.submit(_image(1)), b.submit(nan))

    one, unchecked = asyncio.run(main())
    assert one.gradable_logit[0, 0] == 1 and np.isnan(unchecked.gradable_logit[0, 0])
    assert backend.threads == {threading.get_ident()}
