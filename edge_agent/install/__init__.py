"""Installing bundles on the device: A/B slots, atomic switch, rollback, crash recovery."""

from edge_agent.install.history import UpdateRecord, read_updates, record_update
from edge_agent.install.installer import (
    CRASH_ENV,
    STEPS,
    InstallResult,
    Prepare,
    active_manifest,
    install,
    recover,
    rollback,
    verify_slot,
)
from edge_agent.install.layout import SLOTS, DeviceRoot, InstallError, other_slot
from edge_agent.install.reconcile import served_version, sync_history

__all__ = [
    "CRASH_ENV",
    "SLOTS",
    "STEPS",
    "DeviceRoot",
    "InstallError",
    "InstallResult",
    "Prepare",
    "UpdateRecord",
    "active_manifest",
    "install",
    "other_slot",
    "read_updates",
    "record_update",
    "recover",
    "rollback",
    "served_version",
    "sync_history",
    "verify_slot",
]
