"""The fleet's threshold policy: a device's proposal (from its reviewed cases) waits for an
admin, is left when it moves the threshold more than the policy allows, and is applied by a poll
when the policy allows it; the device audits who approved it and why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deploy.fleet import Inventory, ThresholdPolicy, set_threshold_policy, threshold_policy
from deploy.fleet.thresholds import judge
from edge_agent.install import DeviceRoot
from edge_agent.store import Store
from server.cli.fleet import fleet_app

PENDING = {
    "site_threshold": {"threshold": 0.40, "bundle_threshold": 0.40},
    "threshold_proposals": [{"status": "pending", "threshold": 0.28, "sensitivity": 0.95}],
}


def test_the_policy_decides_by_the_size_of_the_change(tmp_path: Path) -> None:
    manual = judge(ThresholdPolicy(), "a", PENDING)
    assert manual is not None and not manual.approve and "admin" in manual.reason
    small = judge(ThresholdPolicy(auto_approve=True, max_shift=0.1), "a", PENDING)
    assert small is not None and not small.approve and "0.120" in small.reason
    allowed = judge(ThresholdPolicy(auto_approve=True, max_shift=0.2), "a", PENDING)
    assert allowed is not None and allowed.approve and "fleet policy" in allowed.reason
    assert judge(ThresholdPolicy(auto_approve=True), "a", {"threshold_proposals": []}) is None
    assert judge(ThresholdPolicy(auto_approve=True), "a", {}) is None  # an older agent
    with pytest.raises(ValueError, match="max_shift"):
        ThresholdPolicy(max_shift=0)
    inventory = Inventory(tmp_path / "fleet.db")
    assert threshold_policy(inventory.path) == ThresholdPolicy()  # manual until set
    set_threshold_policy(inventory.path, ThresholdPolicy(auto_approve=True, max_shift=0.05))
    assert threshold_policy(inventory.path) == ThresholdPolicy(True, 0.05)


def _reviewed(host: str, root: Path) -> None:
    """400 screened and reviewed eyes whose referable ones score low (a shifted camera)."""
    device = DeviceRoot(root).ensure()
    store = Store(device.state_db, audit_key=device.audit_key)
    rng = np.random.default_rng(7)
    for _ in range(400):
        referable = rng.random() < 0.3
        p = float(rng.beta(3, 4) if referable else rng.beta(1.5, 8))
        case = store.record_screening(
            user="tech", model_version=1, request={}, result={"referable_probability": p}
        )
        store.record_review(case, user="doc", grade=int(rng.integers(2, 5) if referable else 0))
    store.close()


def test_a_poll_applies_what_the_policy_allows(make_fleet: Callable, bundles: object) -> None:
    fleet = make_fleet(["dev-a"], prepare=_reviewed)
    db = str(fleet.inventory.path)

    def cli(*args: str) -> str:
        res = CliRunner().invoke(fleet_app, [*args, "--db", db])
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())

    assert "pending: the policy leaves it to an admin" in cli("poll")
    listed = cli("threshold", "list")
    assert "dev-a: screening at" in listed and "proposes" in listed and "95% CI" in listed
    assert "by at most 0.001" in cli("threshold", "policy", "--auto", "--max-shift", "0.001")
    assert "left for an admin: it moves the threshold by" in cli("poll")
    cli("threshold", "policy", "--max-shift", "1")
    applied = cli("poll")
    assert "applied (fleet policy: auto-approve" in applied, applied
    assert "threshold" not in cli("poll")  # nothing pending any more
    listed = cli("threshold", "list")
    assert "no proposal" in listed
    device = DeviceRoot(fleet.roots["dev-a"])
    store = Store(device.state_db, audit_key=device.audit_key)
    (entry,) = [e for e in store.audit_entries(limit=10_000) if e.action == "threshold.applied"]
    assert "fleet policy" in entry.detail["reason"] and entry.actor == "fleet"
    assert store.verify_audit().ok
    store.close()
    refused = CliRunner().invoke(fleet_app, ["threshold", "approve", "dev-a", "--db", db])
    assert refused.exit_code == 2 and "no threshold to approve" in refused.output
