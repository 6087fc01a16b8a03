"""The golden check: a loaded model must reproduce the exporter's outputs on ``golden.npz``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtime.backend import INPUT_NAME, Backend, Outputs

GOLDEN_FILE = "golden.npz"
TOLERANCE: Mapping[str, float] = {"fp32": 1e-3, "fp16": 5e-2, "int8": 1.0, "int8dyn": 1.0}
"""Largest absolute logit error allowed per precision (as the exporter checked it)."""
TENSORRT_TOLERANCE: Mapping[str, float] = {"fp32": 2e-2, "fp16": 5e-2, "int8": 1.0}
"""TensorRT may pick TF32 kernels for fp32 on Ampere and newer, hence the looser fp32 bound."""
GPU_TOLERANCE = TENSORRT_TOLERANCE
"""The same TF32-aware bound for ONNX Runtime on the GPU: its CUDA provider enables TF32 by
default (``use_tf32``, microsoft/onnxruntime#19357, #19426) and its TensorRT provider builds
TensorRT engines, which may use TF32."""
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
"""ONNX Runtime execution providers whose fp32 kernels may run in TF32."""


def default_tolerance(backend: Backend) -> Mapping[str, float]:
    """Per-precision tolerance for ``backend``: :data:`TOLERANCE` on the CPU,
    :data:`GPU_TOLERANCE` for TensorRT or when ONNX Runtime runs on a CUDA/TensorRT provider."""
    if backend.kind == "tensorrt" or GPU_PROVIDERS & set(backend.providers):
        return GPU_TOLERANCE
    return TOLERANCE


@dataclass(frozen=True)
class GoldenResult:
    """Largest absolute error per output against ``golden.npz``, and the verdict."""

    passed: bool
    max_abs_error: float
    worst_output: str
    tolerance: float
    images: int

    def describe(self) -> str:
        """One line for logs and errors."""
        verdict = "within" if self.passed else "exceeds"
        return (
            f"max |error| {self.max_abs_error:.3g} on {self.worst_output} over {self.images} "
            f"golden images {verdict} tolerance {self.tolerance:g}"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping for JSON."""
        return asdict(self)


def infer_batched(backend: Backend, images: np.ndarray, batch: int) -> Outputs:
    """Run ``images`` through ``backend`` in chunks of at most ``batch`` (and its max batch)."""
    step = min(batch, backend.max_batch or batch)
    parts = [backend.infer(images[i : i + step]) for i in range(0, len(images), step)]
    return Outputs.concatenate(parts)


def golden_check(
    backend: Backend, slot_dir: Path, tolerance: float | Mapping[str, float] | None = None
) -> GoldenResult:
    """Compare ``backend`` with the expected outputs in ``slot_dir/golden.npz`` (the images
    and one array per output of the backend's task, by the output's name).

    ``tolerance``: one number, or per precision (default: :func:`default_tolerance`, by
    backend and the providers it actually uses).
    """
    path = Path(slot_dir) / GOLDEN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the bundle must carry its golden samples")
    if tolerance is None:
        tolerance = default_tolerance(backend)
    tol = tolerance if isinstance(tolerance, float | int) else tolerance.get(backend.precision, 1.0)
    names = backend.output_names
    with np.load(path) as g:
        missing = [k for k in (INPUT_NAME, *names) if k not in g.files]
        if missing:
            raise ValueError(
                f"{path} has no array {missing}; task {backend.task.name} expects "
                f"{[INPUT_NAME, *names]} (has {g.files})"
            )
        images = g[INPUT_NAME].astype(np.float32)
        expected = {k: g[k] for k in names}
    got = infer_batched(backend, images, len(images)).as_dict()
    errors = {k: float(np.abs(got[k] - expected[k].reshape(got[k].shape)).max()) for k in got}
    worst = max(errors, key=lambda k: errors[k])
    return GoldenResult(errors[worst] <= tol, errors[worst], worst, float(tol), len(images))
