"""The shared engine builder's logic, run against a small fake ``tensorrt`` that records calls."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge_agent.runtime import (
    BuildSpec,
    EngineBuildError,
    EngineRecipe,
    build_engine,
    generation,
    version_tag,
)
from edge_agent.runtime.trt_build import (
    cache_calibrator,
    check_version,
    ensure_engine,
    layer_placement,
    layers_path,
    network_flags,
)


class _Recorder:
    """Any attribute is a method that records its call and returns ``self`` (or a fixed value)."""

    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]], **returns: Any) -> None:
        self._calls, self._returns = calls, returns

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any) -> Any:
            self._calls.append((name, args))
            return self._returns.get(name, self)

        return method


class _Config(_Recorder):
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._calls.append((f"{name}=", (value,)))


class _Timing:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return self.blob + b"+tuned"


GPU_LAYERS = {"Layers": [{"Name": "conv1 + relu1", "LayerType": "CaskConvolution"}]}


def fake_trt(
    *,
    network_flag_names: tuple[str, ...] = ("EXPLICIT_BATCH", "STRONGLY_TYPED"),
    plan: Any = b"P",
    layers: dict[str, Any] | None = None,
    version: str = "8.5.2.2",
) -> SimpleNamespace:
    """A ``tensorrt`` stand-in whose ``calls`` list records what the builder asked for; its
    runtime's engine inspector answers ``layers`` (JSON) for every engine."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    info = json.dumps(GPU_LAYERS if layers is None else layers)

    class Inspector:
        def get_engine_information(self, fmt: str) -> str:
            calls.append(("get_engine_information", (fmt,)))
            return info

    class Engine:
        def create_engine_inspector(self) -> Inspector:
            return Inspector()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def __setattr__(self, name: str, value: Any) -> None:
            calls.append((f"runtime.{name}=", (value,)))

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            calls.append(("deserialize_cuda_engine", (data,)))
            return Engine()

    timing: dict[str, _Timing] = {}

    def create_timing_cache(blob: bytes) -> _Timing:
        calls.append(("create_timing_cache", (blob,)))
        timing["cache"] = _Timing(blob)
        return timing["cache"]

    config = _Config(calls)
    object.__setattr__(config, "create_timing_cache", create_timing_cache)
    object.__setattr__(config, "get_timing_cache", lambda: timing["cache"])
    profile = _Recorder(calls)
    network = _Recorder(calls)

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            calls.append(("create_network", (flags,)))
            return network

        def create_builder_config(self) -> Any:
            return config

        def create_optimization_profile(self) -> Any:
            return profile

        def build_serialized_network(self, net: Any, cfg: Any) -> Any:
            calls.append(("build", ()))
            return plan

    class OnnxParser:
        def __init__(self, net: Any, logger: Any) -> None:
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            if data.startswith(b"bad"):
                self.num_errors = 1
                return False
            return True

        def get_error(self, i: int) -> str:
            return "Unsupported op Foo"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    flag_values = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    return SimpleNamespace(
        __version__=version,
        calls=calls,
        Runtime=Runtime,
        LayerInformationFormat=SimpleNamespace(JSON="JSON", ONELINE="ONELINE"),
        ProfilingVerbosity=SimpleNamespace(DETAILED="DETAILED"),
        Logger=Logger,
        Builder=Builder,
        OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=SimpleNamespace(
            **{n: flag_values[n] for n in network_flag_names}
        ),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        DeviceType=SimpleNamespace(DLA="DLA"),
        IInt8EntropyCalibrator2=object,
    )


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


def _names(trt: SimpleNamespace) -> list[str]:
    return [name for name, _ in trt.calls]


def _args(trt: SimpleNamespace, name: str) -> list[tuple[Any, ...]]:
    return [args for n, args in trt.calls if n == name]


def test_generation_and_version_tag_parse_real_version_strings() -> None:
    assert generation("8.5.2.2") == "8.5" and generation("8.6.1.6") == "8.5"
    assert generation("10.0.0b6") == "10+" and generation("11.1.0") == "10+"
    assert version_tag("8.5.2.2") == "8502" and version_tag("10.13.0.35") == "101300"
    with pytest.raises(EngineBuildError, match="'trt-latest'"):
        generation("trt-latest")


@pytest.mark.parametrize("old", ["8.4.1", "8.4.1.5", "8.2.1", "7.1.3"])
def test_tensorrt_84_and_older_is_refused_with_the_upgrade_path(old: str) -> None:
    # JetPack 5.0.x's 8.4 has no execute_async_v3 / num_io_tensors: it used to pass as "8.5"
    with pytest.raises(EngineBuildError, match=r"upgrade to JetPack 5\.1\.x, TensorRT 8\.5\.2"):
        check_version(old)
    with pytest.raises(EngineBuildError, match=f"TensorRT {re.escape(old)}"):
        generation(old)


def test_tensorrt_12_and_later_and_9_are_refused() -> None:
    assert check_version("8.5.2") == "8.5" and check_version("10.3.0") == "10+"
    with pytest.raises(EngineBuildError, match="not supported by this Fovea version"):
        check_version("12.0.1")
    with pytest.raises(EngineBuildError, match=r"9\.x"):
        check_version("9.2.0")


def test_network_flags_per_generation_and_absent_flags_mean_always_on() -> None:
    trt = fake_trt()
    assert network_flags(trt, "8.5") == 1 << 0
    assert network_flags(trt, "10+") == 1 << 1
    assert network_flags(fake_trt(network_flag_names=()), "10+") == 0  # a TensorRT without it


def test_spec_refuses_impossible_settings(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="min <= opt <= max"):
        _spec(tmp_path, batches=(1, 16, 8))
    with pytest.raises(EngineBuildError, match="generation '9'"):
        _spec(tmp_path, generation="9")
    with pytest.raises(EngineBuildError, match="workspace_mb"):
        _spec(tmp_path, workspace_mb=0)


def test_85_int8_sets_builder_flags_profile_and_calibrator(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\n")
    trt = fake_trt()
    spec = _spec(tmp_path, precision="int8", flags=("INT8", "FP16", "X"), calibration_cache=cache)
    assert build_engine(trt, spec) == b"P"
    assert _args(trt, "create_network") == [(1 << 0,)]
    assert _args(trt, "set_memory_pool_limit") == [("WORKSPACE", 64 << 20)]
    assert _args(trt, "set_shape") == [("images", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))]
    assert _args(trt, "set_flag") == [("INT8",), ("FP16",)]  # unknown flags are not passed on
    (calibrator,) = _args(trt, "int8_calibrator=")[0]
    assert calibrator.read_calibration_cache() == cache.read_bytes()
    assert "set_calibration_profile" in _names(trt)
    assert "create_timing_cache" not in _names(trt)  # no timing cache asked for


def test_10_is_strongly_typed_without_builder_flags_or_calibrator(tmp_path: Path) -> None:
    trt = fake_trt()
    spec = _spec(
        tmp_path,
        generation="10+",
        precision="int8",
        flags=("INT8", "FP16", "STRONGLY_TYPED"),
        calibration_cache=tmp_path / "calibration.cache",  # a Q/DQ model must not get one
    )
    build_engine(trt, spec)
    assert _args(trt, "create_network") == [(1 << 1,)]
    assert "set_flag" not in _names(trt)
    assert "int8_calibrator=" not in _names(trt) and "set_calibration_profile" not in _names(trt)


def test_timing_cache_is_read_then_rewritten(tmp_path: Path) -> None:
    timing = tmp_path / "cache" / "timing.cache"
    trt = fake_trt()
    build_engine(trt, _spec(tmp_path, timing_cache=timing))
    assert _args(trt, "create_timing_cache") == [(b"",)]
    assert timing.read_bytes() == b"+tuned"
    trt = fake_trt()
    build_engine(trt, _spec(tmp_path, timing_cache=timing))
    assert _args(trt, "create_timing_cache") == [(b"+tuned",)]
    assert not list(timing.parent.glob(".*.tmp"))


def test_dla_core_targets_the_dla_with_gpu_fallback(tmp_path: Path) -> None:
    trt = fake_trt()
    build_engine(trt, _spec(tmp_path, dla_core=1, precision="fp16", flags=("FP16",)))
    assert ("default_device_type=", ("DLA",)) in trt.calls and ("DLA_core=", (1,)) in trt.calls
    assert ("GPU_FALLBACK",) in _args(trt, "set_flag")
    # the engine inspector names every layer only with DETAILED profiling verbosity
    assert ("profiling_verbosity=", ("DETAILED",)) in trt.calls


def test_fp32_is_refused_on_dla(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="fp32 cannot run on DLA"):
        _spec(tmp_path, dla_core=0)


def test_spec_round_trips_through_plain_json(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        precision="int8",
        flags=("INT8", "FP16"),
        calibration_cache=tmp_path / "calibration.cache",
        timing_cache=tmp_path / "t.cache",
        dla_core=0,
        batches=(8, 8, 8),
    )
    data = json.loads(json.dumps(spec.to_json()))  # what a worker receives over a pipe
    assert data["onnx"] == str(tmp_path / "model.onnx") and data["batches"] == [8, 8, 8]
    assert BuildSpec.from_json(data) == spec
    assert spec.profile == "dla0-b8" and _spec(tmp_path).profile is None
    with pytest.raises(EngineBuildError, match=r"unknown fields \['colour'\]"):
        BuildSpec.from_json({**data, "colour": "red"})
    with pytest.raises(EngineBuildError, match="missing \\['onnx'\\]"):
        BuildSpec.from_json({k: v for k, v in data.items() if k != "onnx"})


DLA_LAYERS = {
    "Layers": [
        {"Name": "images to nvm", "LayerType": "Reformat"},
        {"Name": "{ForeignNode[/stem/Conv.../blocks/Add]}", "LayerType": "DLA"},
        {"Name": "images copy finish", "LayerType": "Reformat"},
        {"Name": "/head/Gemm", "LayerType": "CaskGemm"},
        {"Name": "grade_logits from nvm", "LayerType": "Reformat"},
    ]
}


def test_layer_placement_counts_dla_and_gpu_layers_and_warns_on_fallback() -> None:
    trt = fake_trt(layers=DLA_LAYERS)
    placed = layer_placement(trt, b"engine", dla_core=1)
    assert ("runtime.DLA_core=", (1,)) in trt.calls  # a DLA engine loads onto its core
    assert _args(trt, "get_engine_information") == [("JSON",)]
    assert (placed["dla"], placed["gpu"], placed["transfers"]) == (1, 1, 3)
    assert placed["gpu_layers"] == ["/head/Gemm"]
    assert "1 layer(s) fell back from DLA core 1 to the GPU" in placed["warning"]
    everything_on_gpu = layer_placement(fake_trt(), b"engine", dla_core=0)
    assert (
        everything_on_gpu["dla"] == 0 and "whole engine fell back" in everything_on_gpu["warning"]
    )
    assert layer_placement(fake_trt(), b"engine")["warning"] is None  # a GPU build


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
    assert "build" not in _names(again) and path.read_bytes() == b"PLAN"
    path.write_bytes(b"")  # an empty file is not an engine
    ensure_engine(again, spec, path)
    assert path.read_bytes() == b"OTHER"
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(EngineBuildError):
        ensure_engine(fake_trt(plan=None), spec, tmp_path / "failed.plan")
    assert not (tmp_path / "failed.plan").exists()


def test_failures_name_the_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"bad")
    with pytest.raises(EngineBuildError, match=r"bad\.onnx: .*Unsupported op Foo"):
        build_engine(fake_trt(), _spec(tmp_path, onnx=bad))
    timing = tmp_path / "timing.cache"
    with pytest.raises(EngineBuildError, match=r"fp16 engine from .*model\.onnx"):
        build_engine(fake_trt(plan=None), _spec(tmp_path, precision="fp16", timing_cache=timing))
    assert not timing.exists(), "a failed build must not write a timing cache"


def test_calibrator_replays_the_cache_without_batches(tmp_path: Path) -> None:
    cache = tmp_path / "c.cache"
    cache.write_bytes(b"TRT-8502-EntropyCalibration2\nimages: 3c010204\n")
    calibrator = cache_calibrator(SimpleNamespace(IInt8EntropyCalibrator2=object), cache)
    assert calibrator.get_batch(["images"]) is None and calibrator.get_batch_size() == 1
    assert calibrator.read_calibration_cache() == cache.read_bytes()


def test_exported_recipe_becomes_build_specs(tiny_export: Path, tmp_path: Path) -> None:
    recipe = EngineRecipe(**json.loads((tiny_export / "recipe.json").read_text()))
    step85 = recipe.step("int8", "8.5")
    step10 = recipe.step("int8", "10+")
    assert step85 is not None and step10 is not None
    (spec85,) = recipe.build_specs(step85, tiny_export, tmp_path / "t.cache")
    # explicit quantization: the Q/DQ model, INT8 (and FP16) flags, no calibrator
    assert spec85.onnx == tiny_export / "model.int8.onnx"
    assert spec85.calibrator_cache() is None
    assert spec85.builder_flags() == ("INT8", "FP16")
    assert spec85.input_shape == (3, recipe.image_size, recipe.image_size)
    assert spec85.batches == (recipe.min_batch, recipe.opt_batch, recipe.max_batch)
    assert spec85.timing_cache == tmp_path / "t.cache"
    assert recipe.build_spec(step85, tiny_export, tmp_path / "t.cache") == spec85
    spec10 = recipe.build_spec(step10, tiny_export, None)
    assert spec10.onnx == tiny_export / "model.int8.onnx"
    assert spec10.builder_flags() == () and spec10.calibrator_cache() is None


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
    assert _names(trt).count("build") == 2
    again = fake_trt()
    path = cached_engine(tmp_path, recipe, "fp16", tmp_path / "cache", key, None, again)
    assert path == engines[0][1] and "build" not in _names(again)
    (gpu_engine,) = cached_engines(tmp_path, recipe, "fp32", tmp_path / "cache", key, None, trt)
    assert gpu_engine[1].name == f"{key}.plan"  # the dynamic case keeps its key
    with pytest.raises(EngineBuildError, match=r"JetPack 5\.1\.x"):
        cached_engine(
            tmp_path, recipe, "fp32", tmp_path / "c2", key, None, fake_trt(version="8.4.1")
        )
