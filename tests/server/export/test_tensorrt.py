"""TensorRT: the recipe as data and trtexec lines; builds skipped (never faked) without it."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from edge_agent.runtime import CALIBRATION_CACHE, NOT_INSTALLED, TIMING_CACHE, tensorrt_available
from server.export import ExportConfig, export
from server.export.config import TensorRTConfig
from server.export.recipe import engine_recipe
from server.export.report import print_export_summary
from server.export.tensorrt import build_engines


def test_recipe_for_85_builds_int8_from_qdq_and_10_is_strongly_typed() -> None:
    recipe = engine_recipe(64, TensorRTConfig(precisions=["fp16", "int8"], workspace_mb=512))
    by = {(s.trt, s.precision): s for s in recipe.steps}
    int8_85 = by[("8.5", "int8")]
    # explicit quantization: the Q/DQ model with the INT8 (and FP16) flags and no calibrator
    assert int8_85.onnx == "model.int8.onnx" and int8_85.calibration_cache is None
    assert int8_85.flags == ["INT8", "FP16"]
    assert "--int8" in int8_85.trtexec and "--fp16" in int8_85.trtexec
    assert "--calib" not in int8_85.trtexec  # a Q/DQ model must not get a calibration table
    assert "--maxShapes=images:32x3x64x64" in int8_85.trtexec
    assert "--memPoolSize=workspace:512" in int8_85.trtexec
    assert by[("8.5", "fp16")].onnx == "model.fp32.onnx"
    int8_10 = by[("10+", "int8")]
    assert int8_10.onnx == "model.int8.onnx" and "--stronglyTyped" in int8_10.trtexec
    assert "--calib" not in int8_10.trtexec
    assert not any(s.verified for s in recipe.steps)


def _run_recipe_line(line: str, tmp_path: Path) -> list[list[str]]:
    """Run ``line`` with bash in ``tmp_path``, a fake trtexec first on PATH; its argv per call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.log"
    fake = bin_dir / "trtexec"
    fake.write_text(
        f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> {log}\necho --- >> {log}\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GPU": "sm72", "TRT": "8502"}
    subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, check=True, timeout=30)
    calls = log.read_text().split("---\n")
    return [c.splitlines() for c in calls if c]


def test_trtexec_lines_expand_gpu_and_trt_in_a_real_shell(tmp_path: Path) -> None:
    recipe = engine_recipe(64, TensorRTConfig(precisions=["int8"], workspace_mb=512))
    step = recipe.step("int8", "8.5")
    assert step is not None
    (argv,) = _run_recipe_line(step.trtexec, tmp_path)
    assert "--saveEngine=engines/sm72-trt8502/model.int8.plan" in argv
    assert (tmp_path / "engines" / "sm72-trt8502").is_dir()  # trtexec does not create it
    assert argv == [  # every other argument arrives as written, one word each
        "--onnx=model.int8.onnx",
        "--saveEngine=engines/sm72-trt8502/model.int8.plan",
        "--minShapes=images:1x3x64x64",
        "--optShapes=images:8x3x64x64",
        "--maxShapes=images:32x3x64x64",
        "--memPoolSize=workspace:512",
        f"--timingCacheFile={TIMING_CACHE}",
        "--int8",
        "--fp16",
    ]


def test_dla_trtexec_builds_one_static_engine_per_batch(tmp_path: Path) -> None:
    cfg = TensorRTConfig(precisions=["fp32", "int8"], dla_core=1, dla_batches=[8, 1])
    recipe = engine_recipe(32, cfg)
    assert recipe.dla_batches == [1, 8]
    step = recipe.step("int8", "8.5")
    assert step is not None and step.onnx == "model.fp32.onnx"
    assert step.calibration_cache == CALIBRATION_CACHE  # DLA needs the calibrator's ranges
    calls = _run_recipe_line(step.trtexec, tmp_path)
    assert len(calls) == 2
    for b, argv in zip((1, 8), calls, strict=True):
        assert f"--saveEngine=engines/sm72-trt8502/model.int8.dla1-b{b}.plan" in argv
        for which in ("min", "opt", "max"):
            assert f"--{which}Shapes=images:{b}x3x32x32" in argv
        assert {"--useDLACore=1", "--allowGPUFallback", "--int8", "--fp16"} <= set(argv)
        assert f"--calib={CALIBRATION_CACHE}" in argv
    fp32 = recipe.step("fp32", "8.5")
    assert fp32 is not None and "--useDLACore" not in fp32.trtexec  # fp32 cannot run on DLA
    assert "--maxShapes=images:32x3x32x32" in fp32.trtexec


def test_export_builds_write_engines_and_their_layer_placement(tmp_path: Path) -> None:
    from tests.edge_agent.runtime.fake_tensorrt import DLA_LAYERS, fake_trt

    cfg = TensorRTConfig(precisions=["fp32", "fp16"], dla_core=0)
    (tmp_path / "model.fp32.onnx").write_bytes(b"onnx")
    builds = build_engines(tmp_path, engine_recipe(32, cfg), trt=fake_trt(layers=DLA_LAYERS))
    assert [(b.precision, b.status, b.profile) for b in builds] == [
        ("fp32", "built", None),
        ("fp16", "built", "dla0-b1"),
        ("fp16", "built", "dla0-b8"),
    ]
    for b in builds:
        assert b.path is not None and b.path.read_bytes() == b"P"
        assert b.layers is not None and json.loads(b.layers.read_text())["dla_core"] == (
            None if b.profile is None else 0
        )
    assert builds[1].path is not None and builds[1].path.name == "model.fp16.dla0-b1.plan"
    assert builds[0].warning is None and "fell back from DLA core 0" in str(builds[1].warning)
    report = {
        "heldout": {"split": "test", "images": 0},
        "precisions": {},
        "int8": {
            "method": "MinMax",
            "by_method": {"MinMax": 90.0},
            "excluded": [],
            "calibration_cache": {
                "needed": 9,
                "covered": 6,
                "complete": False,
                "missing": ["a"] * 3,
            },
        },
        "engines": [b.as_dict() for b in builds],
        "lint": [],
    }
    console = Console(file=io.StringIO(), width=200)
    print_export_summary(report, "out", console)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "6 of 9 activations of model.fp32.onnx, 3 without a range" in shown
    assert "TensorRT fp16 (dla0-b8): built" in shown and "fell back from DLA core 0" in shown
    old = build_engines(tmp_path, engine_recipe(32, cfg), trt=fake_trt(version="8.4.1"))
    assert all("JetPack 5.1.x" in b.status for b in old)


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
