"""The clinical-scale data benchmark keeps working: camera JPEGs prepared into shards and one
epoch streamed from them beside the same epoch in memory, at smoke size."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.mark.slow
def test_data_scale_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    bench(["benchmarks.data_scale", "--quick"], tmp_path, timeout=600)
    result = json.loads((tmp_path / "data_scale_quick.json").read_text())
    assert result["prepare"]["images"] == 48 and result["prepare"]["images_per_s"] > 0
    assert result["decode_limit"]["reduced"] > result["decode_limit"]["full"] > 0
    for epoch in ("epoch_sharded", "epoch_in_memory"):
        assert 0 < result[epoch]["peak_pss_mib"] < result["budget_mib"]
        assert result[epoch]["peak_processes"] >= 1
    assert "peak PSS" in (tmp_path / "data_scale_quick.md").read_text()
