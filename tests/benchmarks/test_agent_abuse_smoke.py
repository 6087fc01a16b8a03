"""benchmarks.agent_abuse --quick: every attack phase runs beside the normal load and is
reported with the health probe's p99, the load's success rate and the agent's memory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def test_agent_abuse_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the benchmark pins the clients and the agent to two cores")
    bench(["benchmarks.agent_abuse", "--quick", "--workdir", str(tmp_path / "no")], tmp_path)
    result = json.loads((tmp_path / "agent_abuse_quick.json").read_text())
    phases = result["phases"]
    assert len(phases) == 5 and "1,100 slow connections" in phases
    for name, phase in phases.items():
        assert phase["health_failures"] == 0, name  # the probe always got its answer
        assert phase["normal_requests"] > 0 and phase["normal_ok"] >= 0.9, (name, phase)
    assert result["idle_rss_mib"] > 0 and result["settled_rss_mib"] > 0
    assert "health p99 ms" in (tmp_path / "agent_abuse_quick.md").read_text()
