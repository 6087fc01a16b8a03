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
from edge_agent.install.layout import SLOTS, DeviceRoot, InstallError

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
    "read_updates",
    "record_update",
    "recover",
    "rollback",
    "verify_slot",
]
