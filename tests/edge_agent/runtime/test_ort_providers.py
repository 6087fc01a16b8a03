"""ONNX Runtime's provider options: the TensorRT provider's profile, workspace and caches."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from edge_agent.runtime import OrtBackend
from edge_agent.runtime.ort_backend import provider_chain

GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def gpu_ort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_PROVIDERS))


@pytest.mark.usefixtures("gpu_ort")
def test_tensorrt_provider_gets_an_explicit_profile_and_workspace(tmp_path: Path) -> None:
    chain = provider_chain(
        "int8", tmp_path / "trt", input_shape=(1, 224, 224), max_batch=16, workspace_bytes=1 << 28
    )
    assert [name for name, _ in chain] == GPU_PROVIDERS
    trt = chain[0][1]
    # "input:NxCxHxW", as trtexec's --minShapes (onnxruntime#15546)
    assert trt["trt_profile_min_shapes"] == "images:1x1x224x224"
    assert trt["trt_profile_opt_shapes"] == "images:8x1x224x224"
    assert trt["trt_profile_max_shapes"] == "images:16x1x224x224"
    assert trt["trt_max_workspace_size"] == str(1 << 28)
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_timing_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert trt["trt_int8_enable"] == "True" and trt["trt_fp16_enable"] == "False"
    assert chain[1][1] == {} and chain[2][1] == {}


@pytest.mark.usefixtures("gpu_ort")
def test_defaults_are_one_gib_and_batch_32(tmp_path: Path) -> None:
    trt = provider_chain("fp16", tmp_path, input_shape=(3, 64, 64))[0][1]
    assert trt["trt_max_workspace_size"] == str(1 << 30)
    assert trt["trt_profile_max_shapes"] == "images:32x3x64x64"
    small = provider_chain("fp16", tmp_path, input_shape=(3, 64, 64), max_batch=4)[0][1]
    assert small["trt_profile_opt_shapes"] == "images:4x3x64x64"  # opt never above max
    with pytest.raises(ValueError, match="max_batch"):
        provider_chain("fp16", tmp_path, max_batch=0)


def test_backend_passes_its_task_channels_size_and_max_batch(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    real = provider_chain

    def spy(*args: object, **kwargs: object) -> list[tuple[str, dict[str, str]]]:
        seen.update(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("edge_agent.runtime.ort_backend.provider_chain", spy)
    backend = OrtBackend(
        tiny_export / "model.fp32.onnx",
        "fp32",
        image_size=32,
        cache_dir=tmp_path,
        max_batch=12,
        trt_workspace_bytes=1 << 20,
    )
    assert seen == {"input_shape": (3, 32, 32), "max_batch": 12, "workspace_bytes": 1 << 20}
    assert backend.max_batch is None  # CPU here: no profile limits the batch
