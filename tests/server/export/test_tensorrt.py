"""TensorRT: the recipe as data and trtexec lines; builds skipped (never faked) without it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.runtime import NOT_INSTALLED, tensorrt_available
from server.export import ExportConfig, export
from server.export.config import TensorRTConfig
from server.export.recipe import engine_recipe
from server.export.tensorrt import build_engines


def test_recipe_for_85_uses_flags_and_calibrator_and_10_is_strongly_typed() -> None:
    recipe = engine_recipe(64, TensorRTConfig(precisions=["fp16", "int8"], workspace_mb=512))
    by = {(s.trt, s.precision): s for s in recipe.steps}
    int8_85 = by[("8.5", "int8")]
    assert int8_85.onnx == "model.fp32.onnx" and int8_85.calibration_cache
    assert "--int8" in int8_85.trtexec and "--calib=calibration.cache" in int8_85.trtexec
    assert "--maxShapes=images:32x3x64x64" in int8_85.trtexec
    assert "--memPoolSize=workspace:512" in int8_85.trtexec
    int8_10 = by[("10+", "int8")]
    assert int8_10.onnx == "model.int8.onnx" and "--stronglyTyped" in int8_10.trtexec
    assert "--calib" not in int8_10.trtexec  # a Q/DQ model must not get a calibration table
    assert not any(s.verified for s in recipe.steps)


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_without_tensorrt_every_build_says_skipped(tmp_path: Path) -> None:
    builds = build_engines(tmp_path, engine_recipe(32, TensorRTConfig()))
    assert [b.status for b in builds] == [NOT_INSTALLED, NOT_INSTALLED]
    assert not (tmp_path / "engines").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_builds_an_engine_from_the_export(
    tiny_run: Path, small_config: Callable[..., ExportConfig], tmp_path: Path
) -> None:
    out = export(tiny_run, tmp_path / "export", small_config()).out
    report = json.loads((out / "export.json").read_text())
    built = [e for e in report["engines"] if e["status"] == "built"]
    assert built, report["engines"]
    for engine in built:
        assert Path(engine["path"]).stat().st_size > 0
