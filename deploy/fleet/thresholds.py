"""The fleet's policy for the referral thresholds devices propose from their reviewed cases.

A device proposes its own threshold once its reviewed referable cases pin its sensitivity
down (``edge_agent.screening.propose``); it applies one only when approved. An admin approves
one device with ``fovea fleet threshold approve``; the fleet policy, when set to auto-approve,
approves at each poll every pending proposal whose change from the threshold in use is at most
``max_shift`` (a larger change waits for an admin: a camera that moved the scores that far is
worth a look). The device audits each approval with its reason. The policy is kept beside the
inventory (``fleet_policy``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.store import SqliteOptions, session

_TABLE = "CREATE TABLE IF NOT EXISTS fleet_policy (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_KEY = "thresholds"


@dataclass(frozen=True)
class ThresholdPolicy:
    """Whether polls approve devices' threshold proposals, and up to what change."""

    auto_approve: bool = False
    max_shift: float = 0.25
    """The largest change of the threshold (on P(refer)) approved without an admin."""

    def __post_init__(self) -> None:
        if not 0.0 < self.max_shift <= 1.0:
            raise ValueError(f"max_shift must be in (0, 1], not {self.max_shift}")

    def describe(self) -> str:
        """One line for the CLI and the audit entry's reason."""
        if not self.auto_approve:
            return "proposals wait for an admin (fovea fleet threshold approve)"
        return f"auto-approve proposals that move the threshold by at most {self.max_shift:g}"


@dataclass(frozen=True)
class Verdict:
    """What the policy made of one device's pending proposal."""

    host: str
    current: float
    proposed: float
    approve: bool
    reason: str
    error: str | None = None
    """Why an approval the policy made did not take (the device refused or was unreachable)."""


def threshold_policy(inventory_path: Path) -> ThresholdPolicy:
    """The fleet's threshold policy (the default, manual approval, when none was set)."""
    with session(inventory_path, SqliteOptions(busy_timeout_s=30)) as db:
        db.execute(_TABLE)
        row = db.execute("SELECT value FROM fleet_policy WHERE key = ?", (_KEY,)).fetchone()
    return ThresholdPolicy(**json.loads(row[0])) if row else ThresholdPolicy()


def set_threshold_policy(inventory_path: Path, policy: ThresholdPolicy) -> None:
    """Keep ``policy`` as the fleet's threshold policy."""
    with session(inventory_path, SqliteOptions(busy_timeout_s=30)) as db:
        db.execute(_TABLE)
        db.execute(
            "INSERT OR REPLACE INTO fleet_policy VALUES (?, ?)", (_KEY, json.dumps(asdict(policy)))
        )


def judge(policy: ThresholdPolicy, host: str, status: Mapping[str, Any]) -> Verdict | None:
    """The policy's verdict on ``host``'s pending proposal in its status answer (None: none)."""
    pending = [
        p for p in status.get("threshold_proposals") or []
        if isinstance(p, dict) and p.get("status") == "pending"
    ]  # fmt: skip
    site = status.get("site_threshold") or {}
    if not pending or not isinstance(site, dict):
        return None
    proposed, current = float(pending[0]["threshold"]), float(site["threshold"])
    shift = abs(proposed - current)
    if not policy.auto_approve:
        return Verdict(host, current, proposed, False, "the policy leaves it to an admin")
    if shift > policy.max_shift:
        why = f"it moves the threshold by {shift:.3f}, more than the policy's {policy.max_shift:g}"
        return Verdict(host, current, proposed, False, f"left for an admin: {why}")
    return Verdict(host, current, proposed, True, f"fleet policy: {policy.describe()}")


__all__ = ["ThresholdPolicy", "Verdict", "judge", "set_threshold_policy", "threshold_policy"]
