"""The fleet: an inventory of devices kept current by polling, staged rollouts with canaries,
and a read-only web page of it all for admins (its FastAPI app imported on first use)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from deploy.fleet.accounts import Account, AccountError, PageAccounts
from deploy.fleet.anchors import AuditHead
from deploy.fleet.change import AgentChange, BundleChange, Change, read_manifest
from deploy.fleet.device import Connect, DeviceError, DeviceOps, connect, wheel_version
from deploy.fleet.inventory import (
    Device,
    HostOutcome,
    Inventory,
    InventoryError,
    Rollout,
    TransportSpec,
)
from deploy.fleet.overview import DecisionView, FederationRun, RoundView, describe
from deploy.fleet.pages import when
from deploy.fleet.polling import (
    accept_rekey,
    apply_threshold_policy,
    approve_threshold,
    poll,
    poll_device,
)
from deploy.fleet.rollouts import RolloutPlan, rollback, rollout
from deploy.fleet.snapshots import Snapshot, record_status, snapshots
from deploy.fleet.thresholds import (
    ThresholdPolicy,
    Verdict,
    set_threshold_policy,
    threshold_policy,
)

if TYPE_CHECKING:
    from deploy.fleet.web import PageConfig, fleet_page, serve_page

_NEEDS_FASTAPI = {"PageConfig": "web", "fleet_page": "web", "serve_page": "web"}


def __getattr__(name: str) -> Any:
    """The fleet page's names (whose module imports FastAPI), imported on first use."""
    module = _NEEDS_FASTAPI.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "Account",
    "AccountError",
    "AgentChange",
    "AuditHead",
    "BundleChange",
    "Change",
    "Connect",
    "DecisionView",
    "Device",
    "DeviceError",
    "DeviceOps",
    "FederationRun",
    "HostOutcome",
    "Inventory",
    "InventoryError",
    "PageAccounts",
    "PageConfig",
    "Rollout",
    "RolloutPlan",
    "RoundView",
    "Snapshot",
    "ThresholdPolicy",
    "TransportSpec",
    "Verdict",
    "accept_rekey",
    "apply_threshold_policy",
    "approve_threshold",
    "connect",
    "describe",
    "fleet_page",
    "poll",
    "poll_device",
    "read_manifest",
    "record_status",
    "rollback",
    "rollout",
    "serve_page",
    "set_threshold_policy",
    "snapshots",
    "threshold_policy",
    "wheel_version",
    "when",
]
