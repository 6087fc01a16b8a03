"""What the service needs from a model: its description and an async batch ``infer``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge_agent.service.codec import InferRequest
from edge_agent.service.errors import ApiError


@dataclass(frozen=True)
class TensorInfo:
    """One named tensor of the model; ``-1`` in ``shape`` marks the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, object]:
        """KServe metadata form: name, datatype, shape."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelInfo:
    """What KServe's model metadata shows, plus the agent's own facts about the model."""

    name: str
    version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    platform: str = "onnxruntime_onnx"
    backend: str = "onnxruntime"
    precision: str = "fp32"
    max_request_rows: int = 64
    extra: dict[str, object] = field(default_factory=dict)
    parameters: dict[str, object] = field(default_factory=dict)
    """Shown as the metadata's ``parameters`` (the task: name, kind, classes ...) when set."""

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"model version must be >= 1, got {self.version}")
        if len(self.inputs) != 1:
            raise ValueError(f"the agent serves models with one input, got {len(self.inputs)}")
        if self.max_request_rows < 1:
            raise ValueError(f"max_request_rows must be >= 1, got {self.max_request_rows}")

    def metadata(self) -> dict[str, object]:
        """The body of ``GET /v2/models/{name}`` (``parameters`` only when there are some)."""
        body: dict[str, object] = {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": self.platform,
            "inputs": [t.as_json() for t in self.inputs],
            "outputs": [t.as_json() for t in self.outputs],
        }
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body

    def config(self) -> dict[str, object]:
        """A Triton-style model configuration (``GET /v2/models/{name}/config``)."""

        def dims(t: TensorInfo) -> list[int]:
            return list(t.shape[1:])

        return {
            "name": self.name,
            "platform": self.platform,
            "backend": self.backend,
            "max_batch_size": self.max_request_rows,
            "input": [
                {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": dims(t)}
                for t in self.inputs
            ],
            "output": [
                {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": dims(t)}
                for t in self.outputs
            ],
        }


class Predictor(Protocol):
    """A loaded model behind the service: described by ``info``, run by ``infer``."""

    @property
    def info(self) -> ModelInfo:
        """The model's description."""
        ...

    def ready(self) -> bool:
        """True once the model can answer requests."""
        ...

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 batch (N x C x H x W); every output has N rows."""
        ...


def _finite(array: np.ndarray) -> bool:
    # NaN and inf survive a sum of squares, so a finite one proves every value finite; BLAS's
    # dot is about twice as fast as isfinite().all() and never warns. An infinite sum can also
    # be an overflow of finite values: only then is each value checked.
    flat = array.reshape(-1)
    if array.dtype.char in "fd" and math.isfinite(np.dot(flat, flat)):
        return True
    return bool(np.isfinite(array).all())


def model_input(request: InferRequest, info: ModelInfo) -> np.ndarray:
    """The request's one input, checked against the model: name, datatype, shape, finite.

    Raises ApiError(400) naming what is wrong, or 413 for too many rows.
    """
    expected = info.inputs[0]
    names = sorted(request.inputs)
    if names != [expected.name]:
        raise ApiError(
            400, f"the model takes one input named {expected.name!r}, the request sent {names}"
        )
    array = request.inputs[expected.name]
    datatype = request.datatypes[expected.name]
    if datatype != expected.datatype:
        raise ApiError(
            400,
            f"input {expected.name!r} must be {expected.datatype}, the request sent {datatype}",
        )
    shape = array.shape
    fits = len(shape) == len(expected.shape) and all(
        want == -1 or got == want for got, want in zip(shape, expected.shape, strict=True)
    )
    if not fits:
        raise ApiError(
            400,
            f"input {expected.name!r} must have shape {list(expected.shape)} (-1: any), "
            f"the request sent {list(shape)}",
        )
    if shape[0] == 0:
        raise ApiError(400, f"input {expected.name!r} has no rows")
    if shape[0] > info.max_request_rows:
        raise ApiError(
            413,
            f"input {expected.name!r} has {shape[0]} rows; at most {info.max_request_rows} "
            "per request",
        )
    if array.dtype.kind == "f" and not _finite(array):
        raise ApiError(400, f"input {expected.name!r} holds NaN or infinite values")
    return array


__all__ = ["ModelInfo", "Predictor", "TensorInfo", "model_input"]
