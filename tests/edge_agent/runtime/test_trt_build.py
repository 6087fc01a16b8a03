"""The shared engine builder's logic, run against a small fake ``tensorrt`` that records calls."""

from __future__ import annotations

import json
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
from edge_agent.runtime.trt_build import cache_calibrator, network_flags


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


def fake_trt(
    *, network_flag_names: tuple[str, ...] = ("EXPLICIT_BATCH", "STRONGLY_TYPED"), plan: Any = b"P"
) -> SimpleNamespace:
    """A ``tensorrt`` stand-in whose ``calls`` list records what the builder asked for."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
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
        calls=calls,
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
    assert generation("8.5.2.2") == "8.5" and generation("8.4.1") == "8.5"
    assert generation("10.0.0b6") == "10+" and generation("11.1.0") == "10+"
    assert version_tag("8.5.2.2") == "8502" and version_tag("10.13.0.35") == "101300"
    with pytest.raises(EngineBuildError, match="'trt-latest'"):
        generation("trt-latest")


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
    build_engine(trt, _spec(tmp_path, dla_core=1))
    assert ("default_device_type=", ("DLA",)) in trt.calls and ("DLA_core=", (1,)) in trt.calls
    assert ("GPU_FALLBACK",) in _args(trt, "set_flag")


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
    spec85 = recipe.build_spec(step85, tiny_export, tmp_path / "t.cache")
    assert spec85.onnx == tiny_export / "model.fp32.onnx"
    assert spec85.calibration_cache == tiny_export / "calibration.cache"
    assert spec85.builder_flags() == ("INT8", "FP16")
    assert spec85.input_shape == (3, recipe.image_size, recipe.image_size)
    assert spec85.batches == (recipe.min_batch, recipe.opt_batch, recipe.max_batch)
    assert spec85.timing_cache == tmp_path / "t.cache"
    spec10 = recipe.build_spec(step10, tiny_export, None)
    assert spec10.onnx == tiny_export / "model.int8.onnx"
    assert spec10.builder_flags() == () and spec10.calibrator_cache() is None
