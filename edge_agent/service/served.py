"""The real Predictor: a runtime backend behind the dynamic batcher."""

from __future__ import annotations

import numpy as np

from edge_agent.runtime import INPUT_NAME, Backend, BackendUnavailable, DynamicBatcher
from edge_agent.service.errors import ApiError
from edge_agent.service.predictor import ModelInfo, TensorInfo
from models import TaskSpec


def model_info(
    name: str,
    version: int,
    backend: Backend,
    *,
    max_request_rows: int = 64,
    extra: dict[str, object] | None = None,
) -> ModelInfo:
    """KServe's view of a Fovea model loaded in ``backend``: input and outputs from its task."""
    s, task = backend.image_size, backend.task
    return ModelInfo(
        name=name,
        version=version,
        inputs=(TensorInfo(INPUT_NAME, "FP32", (-1, task.input.channels, s, s)),),
        outputs=tuple(
            TensorInfo(out, "FP32", (-1, *shape)) for out, shape in task.output_shapes().items()
        ),
        parameters=task_parameters(task),
        platform="tensorrt_plan" if backend.kind == "tensorrt" else "onnxruntime_onnx",
        backend=backend.kind,
        precision=backend.precision,
        max_request_rows=max_request_rows,
        extra=dict(extra or {}),
    )


def task_parameters(task: TaskSpec) -> dict[str, object]:
    """The task, as the model metadata's ``parameters``: name, kind, classes, patient rule,
    whether there is a quality head, and which output is which."""
    return {
        "task": task.name,
        "task_kind": task.kind,
        "classes": list(task.classes),
        "patient_rule": task.patient_rule,
        "quality_head": task.quality_head,
        "class_output": task.outputs.classes,
        "quality_output": task.outputs.quality if task.quality_head else None,
        "preprocessing": task.input.preprocessing,
    }


class ServedModel:
    """A loaded backend, batched: what the service's routes call."""

    def __init__(self, info: ModelInfo, batcher: DynamicBatcher) -> None:
        self._info = info
        self.batcher = batcher
        self.refused: str | None = None
        """Why the model no longer answers (its files failed a re-check), or None."""

    @property
    def info(self) -> ModelInfo:
        """The model's description."""
        return self._info

    def ready(self) -> bool:
        """The backend was loaded and verified before serving began, has not been refused
        since (see :meth:`refuse`), and can run now (its inference worker is not restarting)."""
        return self.refused is None and self.batcher.backend.unavailable is None

    def readiness(self) -> dict[str, object]:
        """``/v2/health/ready``'s body: ready, or the state it is in and why."""
        if self.refused is not None:
            return {"ready": False, "state": "refused", "progress": self.refused}
        waiting = self.batcher.backend.unavailable
        if waiting is not None:
            return {"ready": False, "state": "starting", "progress": waiting}
        return {"ready": True}

    def refuse(self, reason: str) -> None:
        """Stop answering: readiness turns false and every inference is a 503 with ``reason``."""
        self.refused = reason

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``images`` as part of a dynamic batch (503 once refused)."""
        if self.refused is not None:
            raise ApiError(503, f"model {self._info.name!r} is not served: {self.refused}")
        try:
            return (await self.batcher.submit(images)).as_dict()
        except BackendUnavailable as exc:  # the worker restarts: try again shortly
            retry = {"Retry-After": str(exc.retry_after_s)}
            raise ApiError(503, f"model {self._info.name!r} is not ready: {exc}", retry) from None

    async def close(self) -> None:
        """Finish what was submitted, then stop the batcher and release the backend."""
        await self.batcher.close()
        self.batcher.backend.close()


__all__ = ["ServedModel", "model_info", "task_parameters"]
