"""The camera-size screening benchmark keeps working: a smoke-sized run and what it writes."""

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_screen_camera_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    """On an untrained student (no demo workdir): all four measurements, side by side."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the benchmark pins the client and the agent to two cores")
    args = ["benchmarks.screen_camera", "--quick", "--workdir", str(tmp_path / "no-demo")]
    bench(args, tmp_path, timeout=900)
    result = json.loads((tmp_path / "screen_camera_quick.json").read_text())
    assert "untrained" in result["source"]
    p50 = result["p50_ms"]
    assert 0 < p50["dct_decode_resize"] < p50["full_decode_resize"]
    assert p50["screen_one_client"] > 0 and result["ratio_screen_vs_dct"] > 0
    agree = result["agreement"]
    assert agree["declared"] == [3000, 2250] and agree["decoded_at"] == [375, 282]
    assert set(agree["agree"]) == {"referral", "quality", "grade"}
    assert "/v1/screen" in (tmp_path / "screen_camera_quick.md").read_text()
