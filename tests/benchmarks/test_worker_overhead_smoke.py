"""benchmarks.worker_overhead --quick: the worker beside the in-process backend and the agent,
and the worker killed under load answered with 503s, never 500s, and back within 10 s."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def test_worker_overhead_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the benchmark pins the clients and the agent to two cores")
    bench(["benchmarks.worker_overhead", "--quick", "--workdir", str(tmp_path / "no")], tmp_path)
    result = json.loads((tmp_path / "worker_overhead_quick.json").read_text())
    (student,) = result["models"].values()
    for batch in ("1", "8", "16"):
        row = student["backend"][batch]
        assert row["in_process_img_s"] > 0 and row["worker_img_s"] > 0
    assert student["agent"]["worker_img_s"] > 0
    killed = result["kill_under_load"]
    assert killed["server_errors_500"] == 0 and killed["back_in_s"] < 10
    assert killed["statuses"].get("503", 0) > 0 and killed["statuses"].get("200", 0) > 0
    assert "worker killed under load" in (tmp_path / "worker_overhead_quick.md").read_text()
