"""The golden check's tolerance follows the backend and the providers it actually runs on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.runtime import INPUT_NAME, Backend, Outputs, golden_check
from edge_agent.runtime.golden import GPU_TOLERANCE, TOLERANCE, default_tolerance
from models import DR_GRADING


class _Fake(Backend):
    """Answers the golden outputs plus a fixed error, and reports the given providers."""

    name = "onnxruntime"

    def __init__(self, slot: Path, providers: list[str], error: float, name: str = "") -> None:
        super().__init__(slot, "fp32", 8, DR_GRADING)
        self._providers, self._error = providers, error
        if name:
            self.name = name  # type: ignore[misc]
        with np.load(slot / "golden.npz") as g:
            self._expected = {k: g[k] for k in self.output_names}

    @property
    def providers(self) -> list[str]:
        return self._providers

    def _run(self, images: np.ndarray) -> Outputs:
        return Outputs(
            *(v[: len(images)] + self._error for v in self._expected.values()),
            names=self.output_names,
        )


@pytest.fixture
def slot(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {INPUT_NAME: rng.normal(size=(4, 3, 8, 8)).astype(np.float32)}
    for name, shape in DR_GRADING.output_shapes().items():
        arrays[name] = rng.normal(size=(4, *shape)).astype(np.float32)
    np.savez(tmp_path / "golden.npz", **arrays)
    return tmp_path


@pytest.mark.parametrize(
    ("providers", "name", "expected"),
    [
        (["CPUExecutionProvider"], "", TOLERANCE),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], "", GPU_TOLERANCE),
        (["TensorrtExecutionProvider", "CPUExecutionProvider"], "", GPU_TOLERANCE),
        (["TensorRT 8.5.2 on Xavier (sm72)"], "tensorrt", GPU_TOLERANCE),
    ],
)
def test_tolerance_by_backend_and_providers(
    slot: Path, providers: list[str], name: str, expected: object
) -> None:
    assert default_tolerance(_Fake(slot, providers, 0.0, name)) is expected


def test_tf32_sized_error_passes_on_the_gpu_and_fails_on_the_cpu(slot: Path) -> None:
    error = 5e-3  # TF32 keeps 10 mantissa bits: fp32 logits move by ~1e-3..1e-2
    cuda = golden_check(_Fake(slot, ["CUDAExecutionProvider", "CPUExecutionProvider"], error), slot)
    assert cuda.passed and cuda.tolerance == GPU_TOLERANCE["fp32"]
    cpu = golden_check(_Fake(slot, ["CPUExecutionProvider"], error), slot)
    assert not cpu.passed and cpu.tolerance == TOLERANCE["fp32"]
