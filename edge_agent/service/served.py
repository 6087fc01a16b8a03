"""The real Predictor: a runtime backend behind the dynamic batcher."""

from __future__ import annotations

import numpy as np

from edge_agent.runtime import INPUT_NAME, Backend, DynamicBatcher
from edge_agent.service.predictor import ModelInfo, TensorInfo
from models import NUM_GRADES, OUTPUT_NAMES


def model_info(
    name: str,
    version: int,
    backend: Backend,
    *,
    max_request_rows: int = 64,
    extra: dict[str, object] | None = None,
) -> ModelInfo:
    """KServe's view of a Fovea model loaded in ``backend``."""
    s = backend.image_size
    return ModelInfo(
        name=name,
        version=version,
        inputs=(TensorInfo(INPUT_NAME, "FP32", (-1, 3, s, s)),),
        outputs=(
            TensorInfo(OUTPUT_NAMES[0], "FP32", (-1, NUM_GRADES)),
            TensorInfo(OUTPUT_NAMES[1], "FP32", (-1, 1)),
        ),
        platform="tensorrt_plan" if backend.name == "tensorrt" else "onnxruntime_onnx",
        backend=backend.name,
        precision=backend.precision,
        max_request_rows=max_request_rows,
        extra=dict(extra or {}),
    )


class ServedModel:
    """A loaded backend, batched: what the service's routes call."""

    def __init__(self, info: ModelInfo, batcher: DynamicBatcher) -> None:
        self._info = info
        self.batcher = batcher

    @property
    def info(self) -> ModelInfo:
        """The model's description."""
        return self._info

    def ready(self) -> bool:
        """The backend was loaded (and golden-checked at install) before serving began."""
        return True

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``images`` as part of a dynamic batch."""
        return (await self.batcher.submit(images)).as_dict()

    async def close(self) -> None:
        """Finish what was submitted, then stop the batcher and release the backend."""
        await self.batcher.close()
        self.batcher.backend.close()


__all__ = ["ServedModel", "model_info"]
