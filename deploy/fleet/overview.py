"""What the fleet page shows, gathered from the inventory and the federation's records.

Only fields chosen here reach the page: never a device's fleet token, its URL's credentials,
or anything about a patient. Drift alerts and threshold proposals come from each device's last
status answer and are shown as aggregates (scalar fields; lists only as counts), with fields
whose names speak of cases, patients, images or secrets left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.fleet.inventory import Device, Inventory, Rollout
from deploy.fleet.snapshots import Snapshot, snapshots

_SECRET = re.compile(r"token|secret|passw|credential|(^|[_\-.])key($|[_\-.])", re.I)
_IDENTIFIER = re.compile(r"(^|[_\-.])(id|ids|uid|uuid)$", re.I)
_PERSONAL = re.compile(r"case|patient|image|path|file", re.I)
"""Fields that could name a patient or a case: only counts and measures of them are shown."""
_DONE = frozenset({"applied", "approved", "rejected", "declined", "withdrawn", "superseded"})
_MAX_TEXT = 200
_MAX_ITEMS = 20


@dataclass(frozen=True)
class DeviceView:
    """One device's row on the page."""

    host: str
    site: str | None
    hardware: str | None
    model: str | None
    agent_version: str | None
    status: str
    last_seen: float | None
    error: str | None
    precision: str | None
    backend: str | None
    alerts: list[str]
    proposals: list[str]
    status_at: float | None
    """When the status answer the alerts and proposals come from was received."""


@dataclass(frozen=True)
class RoundView:
    """One federated round."""

    round: int
    status: str
    accepted: int
    replied: int
    sampled: int
    held_out: float | None
    note: str


@dataclass(frozen=True)
class DecisionView:
    """One promotion decision."""

    round: int
    promoted: bool
    reason: str
    version: int | None
    created: float | None
    per_site: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FederationRun:
    """A federation run directory's rounds and decisions (``error``: why it could not be read)."""

    name: str
    rounds: list[RoundView] = field(default_factory=list)
    decisions: list[DecisionView] = field(default_factory=list)
    error: str | None = None


FederationSource = Callable[[], Sequence[FederationRun]]
"""Reads the federation runs on each request (the server side supplies it)."""


@dataclass(frozen=True)
class Overview:
    """Everything one page shows, and the strings it must never show."""

    devices: list[DeviceView]
    rollouts: list[Rollout]
    runs: list[FederationRun] | None
    """None: no federation folder was given."""
    federation_dir: Path | None
    secrets: frozenset[str]


def _scalar(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int | str):
        text = str(value)
        return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
    if isinstance(value, list | tuple | dict):
        return f"{len(value)} item(s)"
    return None


def _hidden(name: str, value: object) -> bool:
    if _SECRET.search(name) or _IDENTIFIER.search(name):
        return True
    # a count or measure of cases is an aggregate; a string under such a name may name one
    return bool(_PERSONAL.search(name)) and not isinstance(value, int | float | list | tuple | dict)


def describe(item: object) -> str:
    """One alert or proposal as text: its scalar fields (lists as counts), none that could
    name a patient or hold a secret."""
    if not isinstance(item, Mapping):
        return _scalar(item) or "(unreadable)"
    parts = []
    for key, value in item.items():
        text = None if _hidden(str(key), value) else _scalar(value)
        if text is not None:
            parts.append(f"{key}: {text}")
    return "; ".join(parts) or "(no details)"


def _items(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, Mapping):
        return [value]
    return []


def drift_alerts(status: Mapping[str, Any]) -> list[str]:
    """The drift alerts of a status answer (``drift.alerts``), described; [] when absent."""
    drift = status.get("drift")
    alerts = drift.get("alerts") if isinstance(drift, Mapping) else None
    return [describe(a) for a in _items(alerts)][:_MAX_ITEMS]


def pending_proposals(status: Mapping[str, Any]) -> list[str]:
    """The threshold proposals of a status answer (``threshold_proposals``) not yet decided
    (a ``status`` of applied, approved, rejected ... leaves one out), described."""
    found = []
    for p in _items(status.get("threshold_proposals")):
        state = p.get("status") if isinstance(p, Mapping) else None
        if isinstance(state, str) and state.lower() in _DONE:
            continue
        found.append(describe(p))
    return found[:_MAX_ITEMS]


def device_view(device: Device, snapshot: Snapshot | None) -> DeviceView:
    """``device``'s row, with the alerts and proposals of its last status answer."""
    status = snapshot.body if snapshot is not None else {}
    model = None
    if device.model_name or device.model_version is not None:
        version = "" if device.model_version is None else f" v{device.model_version}"
        model = f"{device.model_name or '?'}{version}"
    return DeviceView(
        host=device.host,
        site=device.site,
        hardware=device.hardware,
        model=model,
        agent_version=device.agent_version,
        status=device.status,
        last_seen=device.last_seen,
        error=device.error,
        precision=device.precision,
        backend=device.backend,
        alerts=drift_alerts(status),
        proposals=pending_proposals(status),
        status_at=None if snapshot is None else snapshot.received,
    )


def gather(
    inventory: Inventory,
    federation: FederationSource | None,
    federation_dir: Path | None,
    rollouts: int = 20,
) -> Overview:
    """The page's content now: devices, the latest ``rollouts`` rollouts, federation runs."""
    devices = inventory.devices()
    kept = snapshots(inventory.path)
    return Overview(
        devices=[device_view(d, kept.get(d.host)) for d in devices],
        rollouts=inventory.rollouts(rollouts),
        runs=None if federation is None else list(federation()),
        federation_dir=federation_dir,
        secrets=frozenset(d.token for d in devices),
    )


__all__ = [
    "DecisionView",
    "DeviceView",
    "FederationRun",
    "FederationSource",
    "Overview",
    "RoundView",
    "describe",
    "device_view",
    "drift_alerts",
    "gather",
    "pending_proposals",
]
