"""The clinical-scale benchmark: timm models through Fovea's export and the agent's choice.

The timm test runs in ``make test-timm`` (``.venv-timm``, fails there without timm); the main
venv, where timm cannot import, checks that the benchmark says how to run it instead.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import clinical_models as bench

ROOT = Path(__file__).parents[2]
TINY = bench.Scale(
    teacher_size=32,
    student_size=32,
    batch=2,
    runs=1,
    per_site=40,
    methods=("MinMax",),
    max_excluded=0,
)


def _timm_imports() -> bool:
    try:
        importlib.import_module("timm")
    except Exception:  # beside the CPU torch wheel timm fails with a RuntimeError
        return False
    return True


def test_clinical_models_timm_pair_exports_and_the_agent_picks_a_passing_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _timm_imports():
        if os.environ.get("FOVEA_REQUIRE_TIMM") == "1":
            pytest.fail("timm cannot be imported in the venv of make test-timm")
        pytest.skip("timm cannot be imported beside this torch; make test-timm runs this test")
    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    logged: list[str] = []
    result = bench.run(TINY, log=logged.append)
    rows = result["student"]["precisions"]
    assert set(rows) == {"fp32", "fp16", "int8", "int8dyn"}
    assert rows["fp32"]["passed"] and rows["fp32"]["parity_max_abs_error"] < 1e-3
    assert result["teacher"]["parameters"] > 5 * result["student"]["parameters"]
    for runtime in ("pytorch", "onnxruntime"):
        assert result["teacher"][runtime]["throughput_img_s"] > 0
    assert set(result["contention"]) >= {"oversubscribed", "load_average", "batch1_ms_one_thread"}
    a = result["acceptance"]
    assert a["student_best_precision"] == bench.passed_fastest(rows)
    chosen = result["agent_choice"]["chosen"]["precision"]
    assert a["agent_chose"] == chosen and rows[chosen]["passed"]
    table = bench.table(result, TINY)
    assert len(table) == 1 + 2 + 4 and "ONNX Runtime int8" in str(table)
    # a rerun takes the cached export instead of exporting again
    bench.student_export(TINY, logged.append)
    assert logged[-1].startswith("reusing the student's export")


@pytest.mark.skipif(_timm_imports(), reason="timm imports here: the message is for the main venv")
def test_without_timm_the_benchmark_says_which_python_runs_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.clinical_models", "--quick"],
        cwd=ROOT,
        env={**os.environ, "FOVEA_BENCH_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "run with .venv-timm/bin/python; make test-timm builds it" in done.stderr
    assert not list(tmp_path.iterdir())
