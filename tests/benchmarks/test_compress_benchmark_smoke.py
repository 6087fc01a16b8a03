"""The compression benchmark keeps working: a smoke-sized run that checks what it writes."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_compress_acceptance_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    args = ["benchmarks.compress_acceptance", "--quick", "--workdir", str(tmp_path / "w")]
    bench(args, tmp_path, timeout=600)
    result = json.loads((tmp_path / "compress_acceptance_quick.json").read_text())
    assert result["student_parameters"] < result["teacher_parameters"]
    assert 0 <= result["int8"]["qat_int8_heldout_accuracy"] <= 100
    low, high = result["referable_sensitivity_difference_interval_points"]
    assert -100 <= low <= high <= 100  # a paired bootstrap interval (20 resamples here)
    assert "PTQ INT8" in (tmp_path / "compress_acceptance_quick.md").read_text()
