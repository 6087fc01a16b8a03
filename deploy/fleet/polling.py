"""Keeping the inventory current: ask every device's ``/v1/status`` with its fleet token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from deploy.fleet import probe
from deploy.fleet.device import Connect, DeviceError, DeviceOps, connect
from deploy.fleet.inventory import Device, Inventory
from deploy.transport import TransportError

_HARDWARE = (
    "import pathlib, platform; p = pathlib.Path('/proc/device-tree/model'); "
    "print(p.read_text().strip('\\x00 \\n') if p.is_file() else platform.machine())"
)


async def poll_device(device: Device, conn: Connect | None = connect) -> Device:
    """``device`` updated from its agent (and, with ``conn``, its agent version and hardware)."""
    update: dict[str, object] = {}
    try:
        body = await probe.status(device.url, device.token)
    except ConnectionError as exc:
        update.update(status="unreachable", error=str(exc))
    else:
        model = body.get("model", {})
        update.update(
            model_name=model.get("name"),
            model_version=model.get("version"),
            backend=model.get("backend"),
            precision=model.get("precision"),
            status="ready" if model.get("ready") else "not ready",
            last_seen=time.time(),
            error=None,
        )
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
    return device.model_copy(update=update)


async def poll(
    inventory: Inventory, hosts: Sequence[str] | None = None, conn: Connect | None = connect
) -> list[Device]:
    """Poll the named devices (default: all) in parallel and store what they said."""
    devices = inventory.devices(hosts)
    fresh = await asyncio.gather(*(poll_device(d, conn) for d in devices))
    for device in fresh:
        inventory.save(device)
    return list(fresh)


__all__ = ["poll", "poll_device"]
