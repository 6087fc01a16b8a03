"""TensorRT backend: a cached or freshly built engine run with ``execute_async_v3``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtime.backend import INPUT_NAME, Backend, BackendError, Outputs, register_backend
from edge_agent.runtime.cuda_buffers import gpu_info
from edge_agent.runtime.trt_build import NOT_INSTALLED, tensorrt_available
from edge_agent.runtime.trt_engine import cached_engines, engine_cache_key, timing_cache_path
from edge_agent.runtime.trt_recipe import EngineRecipe
from edge_agent.runtime.trt_run import EngineRunner, EngineSet
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
        runners: list[EngineRunner] = []
        try:
            built = cached_engines(
                self.model_path, self._recipe, precision, Path(cache_dir), self._key, timing, trt
            )  # one engine, or one per batch size on DLA (static shapes)
            for spec, path in built:
                runners.append(EngineRunner(trt, path.read_bytes(), INPUT_NAME, spec.dla_core))
            self._engines = EngineSet(runners)
        except Exception as e:  # TensorRT raises RuntimeError, TypeError, AttributeError, ...
            for runner in runners:
                runner.close()
            raise BackendError(
                f"TensorRT {precision} engine for {self.model_path}: {type(e).__name__}: {e}"
            ) from e
        self.engine_path = built[0][1]
        runner = runners[0]
        missing = [n for n in self.output_names if n not in runner.output_names]
        if missing:
            self.close()
            raise BackendError(
                f"engine outputs {missing} missing (has {runner.output_names}); task "
                f"{self.task.name} names its outputs {list(self.output_names)}"
            )

    @property
    def providers(self) -> list[str]:
        """The GPU this engine runs on."""
        return [f"TensorRT {self._trt_version} on {self._gpu.name} ({self._gpu.sm})"]

    @property
    def max_batch(self) -> int:
        """The optimisation profile's maximum batch."""
        return int(self._engines.max_batch)

    def describe(self) -> dict[str, Any]:
        """As :meth:`Backend.describe`, plus the engine file and its cache key."""
        return {**super().describe(), "engine": str(self.engine_path), "cache_key": self._key}

    def _run(self, images: np.ndarray) -> Outputs:
        out = self._engines.run(images)
        return Outputs(*(out[name] for name in self.output_names), names=self.output_names)

    def close(self) -> None:
        """Free the device buffers and the streams."""
        engines = getattr(self, "_engines", None)
        if engines is not None:
            engines.close()
