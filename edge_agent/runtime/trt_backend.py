"""TensorRT backend: a cached or freshly built engine run with ``execute_async_v3``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtime.backend import INPUT_NAME, Backend, BackendError, Outputs, register_backend
from edge_agent.runtime.cuda_buffers import CudaError, DeviceBuffer, Stream, gpu_info
from edge_agent.runtime.trt_build import NOT_INSTALLED, tensorrt_available
from edge_agent.runtime.trt_engine import cached_engine, engine_cache_key, timing_cache_path
from edge_agent.runtime.trt_recipe import EngineRecipe
from models import DR_GRADING, TaskSpec


@register_backend("tensorrt")
class TrtBackend(Backend):
    """A TensorRT engine for one precision, built from the bundle's recipe on first use.

    ``model_path`` is the bundle (slot) directory that holds the recipe's ONNX files.
    """

    def __init__(
        self,
        model_path: Path,
        precision: str,
        *,
        image_size: int,
        task: TaskSpec = DR_GRADING,
        recipe: dict[str, Any] | EngineRecipe,
        cache_dir: Path,
        bundle_digest: str,
    ) -> None:
        """Load the engine cached for this bundle, GPU, TensorRT and precision, or build it."""
        super().__init__(model_path, precision, image_size, task)
        if not tensorrt_available():
            raise BackendError(NOT_INSTALLED)
        import tensorrt as trt

        gpu = gpu_info()
        if gpu is None:
            raise BackendError("skipped: no CUDA GPU (or cuda-python missing)")
        parsed = recipe if isinstance(recipe, EngineRecipe) else EngineRecipe(**recipe)
        self._recipe = parsed.model_copy(update={"channels": task.input.channels})
        self._key = engine_cache_key(bundle_digest, gpu, trt.__version__, precision)
        self._gpu = gpu
        self._trt_version = trt.__version__
        timing = timing_cache_path(Path(cache_dir), gpu, trt.__version__, self._recipe.timing_cache)
        try:
            self.engine_path = cached_engine(
                self.model_path, self._recipe, precision, Path(cache_dir), self._key, timing
            )
            logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise RuntimeError(f"cannot deserialise {self.engine_path}: built by another GPU?")
            self._context = self._engine.create_execution_context()
            self._setup_buffers(trt)
        except (RuntimeError, OSError, CudaError) as e:
            raise BackendError(f"TensorRT {precision} engine for {self.model_path}: {e}") from e
        self._lock = threading.Lock()

    def _setup_buffers(self, trt: Any) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [INPUT_NAME]:
            raise RuntimeError(f"engine inputs are {inputs}, expected [{INPUT_NAME!r}]")
        self._max_batch = int(engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])
        self._stream = Stream()
        self._buffers: dict[str, DeviceBuffer] = {}
        for name in names:
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            full = (self._max_batch, *shape[1:])
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self._buffers[name] = DeviceBuffer(full, dtype)
            self._context.set_tensor_address(name, self._buffers[name].device)
        missing = [n for n in self.output_names if n not in names]
        if missing:
            raise RuntimeError(
                f"engine outputs {missing} missing (has {names}); task {self.task.name} names "
                f"its outputs {list(self.output_names)}"
            )

    @property
    def providers(self) -> list[str]:
        """The GPU this engine runs on."""
        return [f"TensorRT {self._trt_version} on {self._gpu.name} ({self._gpu.sm})"]

    @property
    def max_batch(self) -> int:
        """The optimisation profile's maximum batch."""
        return self._max_batch

    def describe(self) -> dict[str, Any]:
        """As :meth:`Backend.describe`, plus the engine file and its cache key."""
        return {**super().describe(), "engine": str(self.engine_path), "cache_key": self._key}

    def _run(self, images: np.ndarray) -> Outputs:
        n = images.shape[0]
        with self._lock:
            inp = self._buffers[INPUT_NAME]
            inp.host[:n] = images  # numpy casts to the engine's input type
            inp.to_device(n * inp.nbytes // self._max_batch, self._stream.handle)
            if not self._context.set_input_shape(INPUT_NAME, images.shape):
                raise BackendError(f"TensorRT refused input shape {images.shape}")
            if not self._context.execute_async_v3(int(self._stream.handle)):
                raise BackendError(f"TensorRT execution failed for {self.engine_path}")
            names = self.output_names
            for name in names:
                buf = self._buffers[name]
                buf.to_host(n * buf.nbytes // self._max_batch, self._stream.handle)
            self._stream.synchronize()
            outs = [self._buffers[name].host[:n].astype(np.float32, copy=True) for name in names]
        return Outputs(*outs, names=names)

    def close(self) -> None:
        """Free the device buffers and the stream."""
        for buf in getattr(self, "_buffers", {}).values():
            buf.free()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()
