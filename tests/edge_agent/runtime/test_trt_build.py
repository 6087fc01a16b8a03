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
    layer_placement,
    network_flags,
)
from tests.edge_agent.runtime.fake_tensorrt import DLA_LAYERS, args, fake_trt, names


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
    with pytest.raises(EngineBuildError, match=r"9\.2\.0: the 9\.x releases are not supported"):
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
    assert args(trt, "create_network") == [(1 << 0,)]
    assert args(trt, "set_memory_pool_limit") == [("WORKSPACE", 64 << 20)]
    assert args(trt, "set_shape") == [("images", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))]
    assert args(trt, "set_flag") == [("INT8",), ("FP16",)]  # unknown flags are not passed on
    (calibrator,) = args(trt, "int8_calibrator=")[0]
    assert calibrator.read_calibration_cache() == cache.read_bytes()
    assert "set_calibration_profile" in names(trt)
    assert "create_timing_cache" not in names(trt)  # no timing cache asked for


def test_a_qdq_network_is_never_given_a_calibration_table(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\n")
    qdq = fake_trt(layer_types=("QUANTIZE", "DEQUANTIZE", "CONVOLUTION"))
    spec = _spec(tmp_path, precision="int8", flags=("INT8",), calibration_cache=cache)
    with pytest.raises(EngineBuildError, match=r"Q/DQ .* calibration cache"):
        build_engine(qdq, spec)
    explicit = fake_trt(layer_types=("QUANTIZE", "DEQUANTIZE", "CONVOLUTION"))
    build_engine(explicit, _spec(tmp_path, precision="int8", flags=("INT8", "FP16")))
    assert args(explicit, "set_flag") == [("INT8",), ("FP16",)]
    assert "int8_calibrator=" not in names(explicit)


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
    assert args(trt, "create_network") == [(1 << 1,)]
    assert "set_flag" not in names(trt)
    assert "int8_calibrator=" not in names(trt) and "set_calibration_profile" not in names(trt)


def test_timing_cache_is_read_then_rewritten(tmp_path: Path) -> None:
    timing = tmp_path / "cache" / "timing.cache"
    trt = fake_trt()
    build_engine(trt, _spec(tmp_path, timing_cache=timing))
    assert args(trt, "create_timing_cache") == [(b"",)]
    assert timing.read_bytes() == b"+tuned"
    trt = fake_trt()
    build_engine(trt, _spec(tmp_path, timing_cache=timing))
    assert args(trt, "create_timing_cache") == [(b"+tuned",)]
    assert not list(timing.parent.glob(".*.tmp"))


def test_dla_core_targets_the_dla_with_gpu_fallback(tmp_path: Path) -> None:
    trt = fake_trt()
    spec = _spec(tmp_path, dla_core=1, precision="fp16", flags=("FP16",), batches=(4, 4, 4))
    build_engine(trt, spec)
    assert ("default_device_type=", ("DLA",)) in trt.calls and ("DLA_core=", (1,)) in trt.calls
    assert ("GPU_FALLBACK",) in args(trt, "set_flag")
    # the engine inspector names every layer only with DETAILED profiling verbosity
    assert ("profiling_verbosity=", ("DETAILED",)) in trt.calls


def test_fp32_and_dynamic_profiles_are_refused_on_dla(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="fp32 cannot run on DLA"):
        _spec(tmp_path, dla_core=0, batches=(1, 1, 1))
    with pytest.raises(EngineBuildError, match=r"DLA needs a static batch .* \(1, 4, 8\)"):
        _spec(tmp_path, dla_core=0, precision="fp16", flags=("FP16",))


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


def test_layer_placement_counts_dla_and_gpu_layers_and_warns_on_fallback() -> None:
    trt = fake_trt(layers=DLA_LAYERS)
    placed = layer_placement(trt, b"engine", dla_core=1)
    assert ("runtime.DLA_core=", (1,)) in trt.calls  # a DLA engine loads onto its core
    assert args(trt, "get_engine_information") == [("JSON",)]
    assert (placed["dla"], placed["gpu"], placed["transfers"]) == (1, 1, 3)
    assert placed["gpu_layers"] == ["/head/Gemm"]
    assert "1 layer(s) fell back from DLA core 1 to the GPU" in placed["warning"]
    everything_on_gpu = layer_placement(fake_trt(), b"engine", dla_core=0)
    assert (
        everything_on_gpu["dla"] == 0 and "whole engine fell back" in everything_on_gpu["warning"]
    )
    assert layer_placement(fake_trt(), b"engine")["warning"] is None  # a GPU build


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
