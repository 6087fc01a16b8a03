"""Engines on disk: ensure_engine's build-once files, DLA profiles per batch, the engine cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.runtime import BuildSpec, EngineBuildError, EngineRecipe
from edge_agent.runtime.trt_build import ensure_engine, layers_path
from tests.edge_agent.runtime.fake_tensorrt import DLA_LAYERS, fake_trt, names


def _spec(tmp_path: Path, **overrides: Any) -> BuildSpec:
    onnx = tmp_path / "model.onnx"
    if not onnx.exists():
        onnx.write_bytes(b"onnx")
    fields: dict[str, Any] = {
        "onnx": onnx,
        "generation": "8.5",
        "input_name": "images",
        "input_shape": (3, 32, 32),
        "batches": (1, 4, 8),
        "workspace_mb": 64,
        **overrides,
    }
    return BuildSpec(**fields)


def test_ensure_engine_builds_once_and_writes_the_layers_next_to_it(tmp_path: Path) -> None:
    path = tmp_path / "engines" / "model.fp16.plan"
    trt = fake_trt(plan=b"PLAN")
    spec = _spec(tmp_path, precision="fp16", flags=("FP16",))
    assert ensure_engine(trt, spec, path) == path and path.read_bytes() == b"PLAN"
    layers = json.loads(layers_path(path).read_text())
    assert layers_path(path).name == "model.fp16.plan.layers.json"
    assert layers["gpu"] == 1 and layers["precision"] == "fp16"
    again = fake_trt(plan=b"OTHER")
    ensure_engine(again, spec, path)
    assert "build" not in names(again) and path.read_bytes() == b"PLAN"
    layers_path(path).unlink()  # an engine cached before layer placement existed
    ensure_engine(again, spec, path)
    assert "build" not in names(again) and layers_path(path).is_file()
    assert ("deserialize_cuda_engine", (b"PLAN",)) in again.calls
    path.write_bytes(b"")  # an empty file is not an engine
    ensure_engine(again, spec, path)
    assert path.read_bytes() == b"OTHER"
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(EngineBuildError):
        ensure_engine(fake_trt(plan=None), spec, tmp_path / "failed.plan")
    assert not (tmp_path / "failed.plan").exists()


def _dla_recipe(**over: Any) -> EngineRecipe:
    from server.export.config import TensorRTConfig
    from server.export.recipe import engine_recipe

    cfg = TensorRTConfig(precisions=["fp32", "fp16", "int8"], dla_core=0, **over)
    return engine_recipe(32, cfg)


def test_dla_steps_build_one_static_profile_per_batch(tmp_path: Path) -> None:
    recipe = _dla_recipe()
    int8 = recipe.step("int8", "8.5")
    assert int8 is not None
    specs = recipe.build_specs(int8, tmp_path, None)
    assert [s.batches for s in specs] == [(1, 1, 1), (8, 8, 8)]  # DLA: min = opt = max
    assert {s.dla_core for s in specs} == {0}
    # DLA INT8 on 8.5 takes the calibrator's ranges on the fp32 graph
    assert all(s.onnx.name == "model.fp32.onnx" and s.calibrator_cache() for s in specs)
    fp32 = recipe.step("fp32", "8.5")
    assert fp32 is not None
    (gpu,) = recipe.build_specs(fp32, tmp_path, None)  # fp32 cannot run on DLA
    assert gpu.dla_core is None and gpu.batches == (1, 8, 32)
    assert _dla_recipe(dla_batches=[4]).dla_batch_sizes() == [4]
    # schema_version 1 recipes written before dla_batches still load
    old = recipe.model_dump(exclude={"dla_batches"})
    assert EngineRecipe(**old).dla_batch_sizes() == [1, 8]


def test_cached_engines_key_each_dla_batch(tmp_path: Path) -> None:
    from edge_agent.runtime.cuda_buffers import GpuInfo
    from edge_agent.runtime.trt_engine import cached_engine, cached_engines, engine_cache_key

    gpu = GpuInfo("Xavier", 7, 2)
    key = engine_cache_key("ab" * 32, gpu, "8.5.2.2", "fp16")
    assert engine_cache_key("ab" * 32, gpu, "8.5.2.2", "fp16", "dla0-b8") == f"{key}-dla0-b8"
    recipe = _dla_recipe()
    (tmp_path / "model.fp32.onnx").write_bytes(b"onnx")
    trt = fake_trt(layers=DLA_LAYERS)
    engines = cached_engines(tmp_path, recipe, "fp16", tmp_path / "cache", key, None, trt)
    assert [p.name for _, p in engines] == [f"{key}-dla0-b1.plan", f"{key}-dla0-b8.plan"]
    assert all(layers_path(p).is_file() for _, p in engines)
    assert names(trt).count("build") == 2
    again = fake_trt()
    path = cached_engine(tmp_path, recipe, "fp16", tmp_path / "cache", key, None, again)
    assert path == engines[0][1] and "build" not in names(again)
    (gpu_engine,) = cached_engines(tmp_path, recipe, "fp32", tmp_path / "cache", key, None, trt)
    assert gpu_engine[1].name == f"{key}.plan"  # the dynamic case keeps its key
    with pytest.raises(EngineBuildError, match=r"JetPack 5\.1\.x"):
        cached_engine(
            tmp_path, recipe, "fp32", tmp_path / "c2", key, None, fake_trt(version="8.4.1")
        )
