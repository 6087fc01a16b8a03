"""Staged rollouts on local devices running real agents: success, a failing canary, rollback."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.fleet import BundleChange, RolloutPlan, rollback, rollout
from edge_agent.install import DeviceRoot, active_manifest

pytestmark = pytest.mark.slow

FAST = RolloutPlan(canary=1, soak_s=1.5, check_interval_s=0.5, ready_timeout_s=90)


def _served(url: str, token: str) -> int:
    req = urllib.request.Request(f"{url}/v1/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(json.loads(r.read())["model"]["version"])


def _installed(root: Path) -> int:
    manifest = active_manifest(DeviceRoot(root))
    assert manifest is not None
    return manifest.version


def test_canary_rollout_then_fleet_rollback(make_fleet: Callable, bundles: object) -> None:
    fleet = make_fleet(["dev-a", "dev-b", "dev-c"])
    events: list[tuple[str, str]] = []

    result = asyncio.run(
        rollout(fleet.inventory, BundleChange(bundles.v2), FAST,
                on=lambda h, t: events.append((h, t)))
    )  # fmt: skip

    assert result.status == "succeeded", result.summary
    stages = {h.host: (h.stage, h.result) for h in result.hosts}
    assert stages == {
        "dev-a": ("canary", "updated"), "dev-b": ("rest", "updated"), "dev-c": ("rest", "updated")
    }  # fmt: skip
    # the canary was updated and soaked before the rest were touched
    texts = [f"{h} {t}" for h, t in events]
    canary_done = next(i for i, t in enumerate(texts) if t.startswith("dev-a updated"))
    soak = next(i for i, t in enumerate(texts) if t.startswith("fleet soaking"))
    first_rest = next(i for i, t in enumerate(texts) if "rest: installing" in t)
    assert canary_done < soak < first_rest
    for device in fleet.inventory.devices():
        assert device.model_version == 2 and device.status == "ready"
        assert _served(device.url, device.token) == 2
    for h in result.hosts:
        assert {"copy", "install", "restart", "ready"} <= set(h.steps) and h.seconds > 0
    assert result.seconds is not None and result.seconds >= FAST.soak_s

    # running it again changes nothing
    again = asyncio.run(rollout(fleet.inventory, BundleChange(bundles.v2), FAST))
    assert {h.result for h in again.hosts} == {"unchanged"}

    back = asyncio.run(rollback(fleet.inventory, ready_timeout_s=90))
    assert back.status == "succeeded", back.summary
    assert {(h.from_version, h.to_version) for h in back.hosts} == {("2", "1")}
    for device in fleet.inventory.devices():
        assert device.model_version == 1 and _served(device.url, device.token) == 1
    kinds = [r.kind for r in fleet.inventory.rollouts()]
    assert kinds == ["rollback", "bundle", "bundle"]


def test_failing_canary_is_rolled_back_and_the_rest_untouched(
    make_fleet: Callable, bundles: object
) -> None:
    # dev-a is pinned to fp16 (agent.yaml); v3 ships no fp16 model, so its agent cannot start
    fleet = make_fleet(["dev-a", "dev-b", "dev-c"], pinned={"dev-a": "fp16"})
    pid_c = fleet.pid("dev-c")
    plan = RolloutPlan(
        canary=2, canary_hosts=("dev-a", "dev-b"), soak_s=1, check_interval_s=0.5,
        ready_timeout_s=20,
    )  # fmt: skip

    result = asyncio.run(rollout(fleet.inventory, BundleChange(bundles.v3_no_fp16), plan))

    assert result.status == "rolled back", result.summary
    by_host = {h.host: h for h in result.hosts}
    assert by_host["dev-a"].result == "rolled back" and by_host["dev-a"].stage == "canary"
    assert "not ready" in (by_host["dev-a"].error or "")
    assert by_host["dev-b"].result == "rolled back"  # a healthy canary goes back too
    assert by_host["dev-c"].result == "skipped" and by_host["dev-c"].stage == "rest"
    assert "fp16" in fleet.log("dev-a")  # the agent said why it could not serve v3
    for host in ("dev-a", "dev-b", "dev-c"):
        device = fleet.inventory.get(host)
        assert _installed(fleet.roots[host]) == 1
        assert _served(device.url, device.token) == 1 and device.status == "ready"
    assert fleet.pid("dev-c") == pid_c, "dev-c was restarted, but it must be left untouched"
    updates = fleet.roots["dev-c"] / "updates.jsonl"
    assert not updates.exists() or "v3" not in updates.read_text()
    assert {"install", "revert"} <= set(by_host["dev-a"].steps)
    recorded = fleet.inventory.rollout(result.id)
    assert recorded.status == "rolled back" and recorded.ended is not None
