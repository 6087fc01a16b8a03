"""Keeping the inventory current: ask every device's ``/v1/status`` with its fleet token."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from deploy.fleet import probe
from deploy.fleet.anchors import AuditHead, head_of
from deploy.fleet.device import Connect, DeviceError, DeviceOps, connect
from deploy.fleet.inventory import Device, Inventory
from deploy.fleet.snapshots import record_status, snapshots
from deploy.fleet.thresholds import Verdict, judge, threshold_policy
from deploy.transport import TransportError

_HARDWARE = (
    "import pathlib, platform; p = pathlib.Path('/proc/device-tree/model'); "
    "print(p.read_text().strip('\\x00 \\n') if p.is_file() else platform.machine())"
)


async def poll_device(device: Device, conn: Connect | None = connect) -> Device:
    """``device`` updated from its agent (and, with ``conn``, its agent version and hardware)."""
    return (await _poll(device, conn))[0]


async def accept_rekey(inventory: Inventory, host: str) -> tuple[AuditHead, AuditHead]:
    """Anchor ``host``'s head under its new audit key (``fovea-agent audit rekey`` on purpose):
    (the old anchor, kept as retired; the new one). ConnectionError when unreachable."""
    device = inventory.get(host)
    new = head_of(await probe.status(device.url, device.token))
    if new is None:
        raise ValueError(f"{host} reports no audit head (an agent from before anchors)")
    return inventory.accept_rekey(host, new), new


async def approve_threshold(
    inventory: Inventory, host: str, reason: str = "approved by an admin"
) -> dict[str, Any]:
    """Apply ``host``'s proposed referral threshold (the agent audits it with ``reason``): its
    threshold status after. ConnectionError when unreachable or when no proposal is ready."""
    device = inventory.get(host)
    return await probe.approve_threshold(device.url, device.token, reason)


async def apply_threshold_policy(
    inventory: Inventory, hosts: Sequence[str] | None = None
) -> list[Verdict]:
    """The fleet policy's verdict on each pending threshold proposal in the devices' last
    status answers (``poll`` first), the approvals it allows made and their status recorded."""
    policy = threshold_policy(inventory.path)
    kept = snapshots(inventory.path)
    verdicts = []
    for device in inventory.devices(hosts):
        snapshot = kept.get(device.host)
        verdict = judge(policy, device.host, snapshot.body) if snapshot else None
        if verdict is None:
            continue
        if verdict.approve:
            try:
                await approve_threshold(inventory, device.host, verdict.reason)
                record_status(
                    inventory.path, device.host, await probe.status(device.url, device.token)
                )
            except ConnectionError as exc:
                verdict = dataclasses.replace(verdict, error=str(exc))
        verdicts.append(verdict)
    return verdicts


async def _poll(
    device: Device, conn: Connect | None
) -> tuple[Device, AuditHead | None, dict[str, Any] | None]:
    """``poll_device``, the audit chain head the agent reported, and its status answer."""
    update: dict[str, object] = {}
    head = None
    body: dict[str, Any] | None = None
    try:
        body = await probe.status(device.url, device.token)
    except ConnectionError as exc:
        update.update(status="unreachable", error=str(exc))
    else:
        try:
            head = head_of(body)
        except ValueError as exc:
            update["error"] = str(exc)
        model = body.get("model", {})
        update.update(
            model_name=model.get("name"),
            model_version=model.get("version"),
            backend=model.get("backend"),
            precision=model.get("precision"),
            status="ready" if model.get("ready") else "not ready",
            last_seen=time.time(),
        )
        update.setdefault("error", None)
    if conn is not None:
        transport = conn(device)
        ops = DeviceOps(device, transport)
        try:
            update["agent_version"] = await ops.agent_version()
            if device.hardware is None:
                result = await transport.run([device.transport.python, "-c", _HARDWARE], timeout=30)
                if result.ok and result.stdout.strip():
                    update["hardware"] = result.stdout.strip()
        except (DeviceError, TransportError) as exc:
            if update.get("error") is None:
                update["error"] = f"agent version: {exc}"
        finally:
            await transport.close()
    return device.model_copy(update=update), head, body


async def poll(
    inventory: Inventory, hosts: Sequence[str] | None = None, conn: Connect | None = connect
) -> list[Device]:
    """Poll the named devices (default: all) in parallel and store what they said, each audit
    chain head as the device's anchor (a head that went backwards is kept out, and named in the
    device's ``error``), and each status answer whole (drift alerts, threshold proposals: what
    the fleet page and the report read, ``deploy.fleet.snapshots``)."""
    devices = inventory.devices(hosts)
    polled = await asyncio.gather(*(_poll(d, conn) for d in devices))
    fresh = []
    for device, head, body in polled:
        if body is not None:
            record_status(inventory.path, device.host, body)
        problem = None if head is None else inventory.record_head(device.host, head)
        if problem is not None:
            device = device.model_copy(update={"error": problem})
        inventory.save(device)
        fresh.append(device)
    return fresh


__all__ = ["accept_rekey", "apply_threshold_policy", "approve_threshold", "poll", "poll_device"]
