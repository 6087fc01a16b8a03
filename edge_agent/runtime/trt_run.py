"""Running TensorRT engines: one engine's buffers and ``execute_async_v3``, and a set of engines
with static batch sizes (DLA) that pads a batch up to the nearest one.

Shared by the in-process backend (``trt_backend.py``) and the inference worker (``worker.py``),
so like them it stays loadable by JetPack 5's Python 3.8: the standard library, numpy, and the
``trt`` module handed in by the caller. ``make lint`` checks it as Python 3.8.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_agent.runtime.cuda_buffers import DeviceBuffer, Stream, cuda_context

RUN_API = ("execute_async_v3", "set_input_shape", "set_tensor_address")
"""The execution-context calls every engine run uses (TensorRT 8.5 and later)."""
ENGINE_API = ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_profile_shape")


class EngineRunError(RuntimeError):
    """An engine cannot be loaded or run here; the message says which engine and why."""


def check_run_api(trt: Any, engine: Any, context: Any) -> None:
    """Refuse a TensorRT whose engines lack the named-tensor API (8.4 and older) by name."""
    missing = [n for n in ENGINE_API if not hasattr(engine, n)]
    missing += [n for n in RUN_API if not hasattr(context, n)]
    if missing:
        version = getattr(trt, "__version__", "?")
        raise EngineRunError(
            f"TensorRT {version} lacks {', '.join(missing)} (added in 8.5): upgrade to JetPack "
            "5.1.x (TensorRT 8.5.2) or later"
        )


class EngineRunner:
    """One deserialised engine with device buffers for its largest profile batch.

    ``dla_core`` is set on the runtime before deserialising (an engine built for DLA runs on
    the core it is given there). Batches below the profile's minimum (static DLA engines) are
    padded with zeros and the padding dropped from the outputs.
    """

    def __init__(self, trt: Any, plan: bytes, input_name: str, dla_core: int | None = None) -> None:
        self._buffers: dict[str, DeviceBuffer] = {}
        self._stream: Stream | None = None
        self._lock = threading.Lock()
        self.input_name = input_name
        with cuda_context():
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            if dla_core is not None:
                self._runtime.DLA_core = int(dla_core)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise EngineRunError(
                    "TensorRT could not deserialise the engine: built by another GPU or TensorRT?"
                )
            self._context = self._engine.create_execution_context()
            check_run_api(trt, self._engine, self._context)
            try:
                self._allocate(trt)
            except BaseException:
                self.close()  # buffers already allocated must not leak
                raise

    def _allocate(self, trt: Any) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [self.input_name]:
            raise EngineRunError(f"engine inputs are {inputs}, expected [{self.input_name!r}]")
        low, _, high = engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.output_names = [n for n in names if n != self.input_name]
        self.row_shapes: dict[str, tuple[int, ...]] = {}
        self._stream = Stream()
        for name in names:
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            self.row_shapes[name] = shape[1:]
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self._buffers[name] = DeviceBuffer((self.max_batch, *shape[1:]), dtype)
            self._context.set_tensor_address(name, self._buffers[name].device)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs (float32, one array per output name) for ``images`` (n <= max_batch)."""
        n = int(images.shape[0])
        if not 1 <= n <= self.max_batch:
            raise EngineRunError(f"batch {n} outside the engine's 1..{self.max_batch}")
        rows = max(n, self.min_batch)  # a static engine runs its whole batch
        assert self._stream is not None
        stream = self._stream
        with self._lock, cuda_context():
            inp = self._buffers[self.input_name]
            inp.host[:n] = images  # numpy casts to the engine's input type
            if rows > n:
                inp.host[n:rows] = 0
            inp.to_device(rows * inp.nbytes // self.max_batch, stream)
            if not self._context.set_input_shape(self.input_name, (rows, *images.shape[1:])):
                raise EngineRunError(f"TensorRT refused input shape {(rows, *images.shape[1:])}")
            if not self._context.execute_async_v3(stream.address):
                raise EngineRunError("TensorRT execution failed")
            for name in self.output_names:
                buf = self._buffers[name]
                buf.to_host(rows * buf.nbytes // self.max_batch, stream)
            stream.synchronize()
            return {
                name: self._buffers[name].host[:n].astype(np.float32, copy=True)
                for name in self.output_names
            }

    def close(self) -> None:
        """Free the device buffers and the stream (idempotent)."""
        with cuda_context():
            for buf in self._buffers.values():
                buf.free()
            self._buffers = {}
            if self._stream is not None:
                self._stream.close()
                self._stream = None


class EngineSet:
    """Engines of one model for different batch profiles (e.g. static DLA engines at 1 and 8):
    a batch runs on the smallest engine that holds it, larger batches in chunks of the largest.
    """

    def __init__(self, runners: Sequence[EngineRunner]) -> None:
        if not runners:
            raise EngineRunError("no engine to run")
        self.runners: list[EngineRunner] = sorted(runners, key=lambda r: r.max_batch)
        first = self.runners[0]
        for other in self.runners[1:]:
            if other.output_names != first.output_names or other.row_shapes != first.row_shapes:
                raise EngineRunError("the engines of one model disagree on their tensors")
        self.output_names = first.output_names
        self.row_shapes = first.row_shapes
        self.max_batch = self.runners[-1].max_batch

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for any number of images."""
        n = int(images.shape[0])
        for runner in self.runners:
            if n <= runner.max_batch:
                return runner.run(images)
        step = self.max_batch
        parts = [self.runners[-1].run(images[i : i + step]) for i in range(0, n, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}

    def close(self) -> None:
        """Close every engine."""
        for runner in self.runners:
            runner.close()
