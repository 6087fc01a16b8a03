"""The fleet: an inventory of devices kept current by polling, and staged rollouts with canaries."""

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
from deploy.fleet.polling import accept_rekey, poll, poll_device
from deploy.fleet.rollouts import RolloutPlan, rollback, rollout

__all__ = [
    "AgentChange",
    "AuditHead",
    "BundleChange",
    "Change",
    "Connect",
    "Device",
    "DeviceError",
    "DeviceOps",
    "HostOutcome",
    "Inventory",
    "InventoryError",
    "Rollout",
    "RolloutPlan",
    "TransportSpec",
    "accept_rekey",
    "connect",
    "poll",
    "poll_device",
    "read_manifest",
    "rollback",
    "rollout",
    "wheel_version",
]
