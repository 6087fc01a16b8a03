"""TensorRT: recipe parsing and cache keys everywhere; engines only where TensorRT exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_agent.runtime import (
    NOT_INSTALLED,
    BackendError,
    BundleInfo,
    EngineRecipe,
    SelectionSettings,
    create_backend,
    engine_cache_key,
    generation,
    golden_check,
    tensorrt_available,
)
from edge_agent.runtime.cuda_buffers import GpuInfo
from edge_agent.runtime.trt_engine import timing_cache_path


def test_the_exporters_recipe_parses(tiny_export: Path) -> None:
    recipe = EngineRecipe(**json.loads((tiny_export / "recipe.json").read_text()))
    step85 = recipe.step("int8", "8.5")
    # explicit quantization on 8.5: the Q/DQ model, no calibration table
    assert step85 is not None and step85.onnx == "model.int8.onnx"
    assert step85.calibration_cache is None
    assert "INT8" in step85.flags
    step10 = recipe.step("int8", "10+")
    assert step10 is not None and step10.onnx == "model.int8.onnx"
    assert recipe.min_batch <= recipe.opt_batch <= recipe.max_batch


def test_cache_key_separates_every_ingredient() -> None:
    xavier = GpuInfo("Xavier", 7, 2)
    base = engine_cache_key("0123456789abcdef" * 4, xavier, "8.5.2.2", "fp16")
    assert base == "0123456789abcdef-xavier-sm72-trt8.5.2.2-fp16"
    others = {
        engine_cache_key("f" * 64, xavier, "8.5.2.2", "fp16"),
        engine_cache_key("0123456789abcdef" * 4, GpuInfo("NVIDIA H100", 9, 0), "8.5.2.2", "fp16"),
        engine_cache_key("0123456789abcdef" * 4, xavier, "10.3.0", "fp16"),
        engine_cache_key("0123456789abcdef" * 4, xavier, "8.5.2.2", "int8"),
    }
    assert base not in others and len(others) == 4
    assert generation("8.5.2.2") == "8.5" and generation("10.13.0") == "10+"
    assert generation("11.0.0") == "10+"


def test_timing_cache_is_per_gpu_and_tensorrt_not_per_bundle(tmp_path: Path) -> None:
    xavier = GpuInfo("Xavier", 7, 2)
    path = timing_cache_path(tmp_path, xavier, "8.5.2.2", "timing.cache")
    assert path == tmp_path / "xavier-sm72-trt8.5.2.2.timing.cache"
    assert path != timing_cache_path(tmp_path, xavier, "10.3.0", "timing.cache")
    assert path != timing_cache_path(tmp_path, GpuInfo("Orin", 8, 7), "8.5.2.2", "timing.cache")


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_without_tensorrt_the_backend_says_so(tiny_export: Path, tmp_path: Path) -> None:
    recipe = json.loads((tiny_export / "recipe.json").read_text())
    with pytest.raises(BackendError, match=NOT_INSTALLED):
        create_backend(
            "tensorrt",
            tiny_export,
            "fp16",
            image_size=32,
            recipe=recipe,
            cache_dir=tmp_path,
            bundle_digest="ab",
        )


@pytest.mark.tensorrt
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_caches_and_passes_golden(
    precision: str, tiny_export: Path, tmp_path: Path
) -> None:
    slot = tmp_path / "slot"
    shutil.copytree(tiny_export, slot)
    info = BundleInfo.from_export_dir(slot, digest="cd" * 32)
    settings = SelectionSettings(cache_dir=tmp_path / "engines")
    from edge_agent.runtime.precision import open_candidate

    with open_candidate("tensorrt", precision, slot, info, settings) as backend:
        assert golden_check(backend, slot).passed
        engine = Path(backend.describe()["engine"])
    assert engine.is_file() and engine.parent == tmp_path / "engines"
    mtime = engine.stat().st_mtime_ns
    with open_candidate("tensorrt", precision, slot, info, settings) as again:
        assert golden_check(again, slot).passed
    assert engine.stat().st_mtime_ns == mtime, "the cached engine must be reused, not rebuilt"
