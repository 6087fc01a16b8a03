"""The inventory (SQLite, 0600), error counters, polling an unreachable device, the CLI."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.fleet import (
    Device,
    HostOutcome,
    Inventory,
    InventoryError,
    RolloutPlan,
    TransportSpec,
    poll,
)
from deploy.fleet.probe import count_errors
from edge_agent.service.metrics import AgentMetrics
from server.cli import app


def _device(host: str, url: str = "http://127.0.0.1:9", site: str | None = None) -> Device:
    spec = TransportSpec(kind="local", root=f"/tmp/{host}", restart=("true",))
    return Device(host=host, url=url, token="secret", site=site, transport=spec)


def test_inventory_is_private_and_refuses_duplicates(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "fleet.db")
    assert stat.S_IMODE((tmp_path / "fleet.db").stat().st_mode) == 0o600  # holds fleet tokens
    inv.add(_device("b", site="north"))
    inv.add(_device("a", site="south"))
    with pytest.raises(InventoryError, match="a is already in"):
        inv.add(_device("a"))
    assert [d.host for d in inv.devices()] == ["a", "b"]
    assert [d.host for d in inv.devices(site="north")] == ["b"]
    with pytest.raises(InventoryError, match="nope is not in"):
        inv.get("nope")
    with pytest.raises(ValueError, match="not an http"):
        _device("c", url="ftp://x")


def test_rollouts_are_recorded_with_host_timings(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "fleet.db")
    rid = inv.start_rollout("bundle", "b.tar", "2", {"canary": 1})
    inv.record_host(
        rid, HostOutcome(host="a", stage="canary", result="updated", seconds=1.5,
                         steps={"copy": 0.1, "install": 1.0})
    )  # fmt: skip
    inv.finish_rollout(rid, "succeeded", "succeeded: 1 updated")
    r = inv.rollout(rid)
    assert r.status == "succeeded" and r.seconds is not None and r.seconds >= 0
    assert r.hosts[0].steps == {"copy": 0.1, "install": 1.0} and r.plan == {"canary": 1}


def test_server_errors_are_counted_from_the_agents_metrics() -> None:
    metrics = AgentMetrics()
    metrics.observe("/v1/screen", 200, 0.01)
    metrics.observe("/v1/screen", 400, 0.01)
    metrics.observe("/v2/models/x/infer", 500, 0.01)
    metrics.observe("/v1/screen", 503, 0.01)
    text = metrics.render().decode()
    assert count_errors(text, "server") == 2
    assert count_errors(text, "client") == 1


def test_plan_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="canary must be >= 1"):
        RolloutPlan(canary=0)
    with pytest.raises(ValueError, match="soak_s"):
        RolloutPlan(soak_s=-1)


def test_poll_marks_an_unreachable_device(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "fleet.db")
    inv.add(_device("gone", url="http://127.0.0.1:9"))
    [device] = asyncio.run(poll(inv, conn=None))
    assert device.status == "unreachable" and "127.0.0.1:9" in (device.error or "")
    assert inv.get("gone").status == "unreachable"


def test_cli_add_and_list(tmp_path: Path) -> None:
    db = str(tmp_path / "fleet.db")
    runner = CliRunner()
    common = ["--db", db, "--url", "http://10.0.0.5:8000", "--token", "t"]
    done = runner.invoke(
        app,
        ["fleet", "add", "jetson-1", *common, "--site", "north", "--ssh", "fovea@10.0.0.5:2222"],
    )
    assert done.exit_code == 0, done.output
    spec = Inventory(Path(db)).get("jetson-1").transport
    assert (spec.kind, spec.user, spec.address, spec.port) == ("ssh", "fovea", "10.0.0.5", 2222)
    again = runner.invoke(app, ["fleet", "add", "jetson-1", *common, "--local", str(tmp_path)])
    assert again.exit_code == 2 and "--replace" in again.output
    neither = runner.invoke(app, ["fleet", "add", "x", *common])
    assert neither.exit_code == 2 and "exactly one of" in neither.output
    listed = runner.invoke(app, ["fleet", "list", "--db", db])
    assert listed.exit_code == 0 and "jetson-1" in listed.output and "north" in listed.output
