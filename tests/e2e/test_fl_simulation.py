"""Scale rehearsal: the federation App under Flower's simulation runtime (Ray), real processes.

A simulation SuperLink, ``flwr run`` with ``num-supernodes`` simulated sites, the same ServerApp
and ClientApp as on devices; each simulated node builds its own synthetic device root. CI runs
8 sites for 1 round; the 50-site rehearsal is ``slow``. Under ``CI=true`` a missing Flower or
Ray is a failure, elsewhere the tests skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks.federation_scale import ScaleConfig, rehearse
from server.federation.registry import Registry


def _need_simulation() -> None:
    missing = [m for m in ("flwr", "ray", "torch", "psutil") if importlib.util.find_spec(m) is None]
    if not shutil.which("flower-superlink", path=str(Path(sys.executable).parent)):
        missing.append("flower-superlink")
    if missing:
        message = f"the scale rehearsal needs {', '.join(missing)} (pip install -e '.[fl]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _check(result: dict, sites: int, rounds: int) -> Registry:
    logs = result["logs"]
    tail = Path(logs["run"]).read_text(errors="replace")[-3000:]
    assert result["status"] == "finished", f"status {result['status']}:\n{tail}"
    assert [r["round"] for r in result["rounds"]] == list(range(rounds + 1))
    for r in result["rounds"]:
        assert (r["sampled"], r["accepted"]) == (sites, sites), f"round {r}:\n{tail}"
        assert r["seconds"] > 0 and r["peak_pss_mib"] > 0
    # the tree measured is more than the SuperLink: the ServerApp, simulation and Ray workers
    assert result["peak_processes"] >= 4
    assert result["peak_rss_mib"] >= result["peak_pss_mib"] > 100
    return Registry(Path(result["config"]["workdir"]) / "run" / "registry.db")


def test_eight_simulated_sites_one_round(tmp_path: Path) -> None:
    _need_simulation()
    config = ScaleConfig(sites=8, rounds=1, cases=16, workdir=tmp_path, timeout=300)
    result = rehearse(config, log=lambda line: None)
    registry = _check(result, sites=8, rounds=1)
    train = [p for _, p in registry.participants(1) if p.phase == "train"]
    assert len({p.node_id for p in train}) == 8, "every simulated node trained once"
    assert all(p.metrics.get("num-examples", 0) > 0 for p in train), train
    built = sorted((tmp_path / "sim-sites").glob("*/site-*"))
    assert [p.name for p in built] == [f"site-{i:04d}" for i in range(8)]
    profiles = [json.loads((p / "site.json").read_text())["profile"] for p in built]
    assert set(profiles) == {"site-a", "site-b", "site-c", "site-d", "site-e"}


@pytest.mark.slow
def test_fifty_simulated_sites_within_five_minutes(tmp_path: Path) -> None:
    _need_simulation()
    config = ScaleConfig(sites=50, rounds=1, cases=16, workdir=tmp_path, timeout=300)
    result = rehearse(config, log=lambda line: None)
    _check(result, sites=50, rounds=1)
    assert result["total_seconds"] < 300
