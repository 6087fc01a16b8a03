"""Fleet installs and rollbacks on a device flashed under systemd run ``fovea-agent`` as its
service user (in ``video``), so precision is measured, and files are owned, as the service."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.fleet import Device, DeviceOps, Inventory, TransportSpec
from deploy.transport import RunResult


class Recorder:
    """A Transport that records what it is asked to run."""

    host = "xavier"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        self.calls.append(tuple(argv))
        return RunResult(self.host, tuple(argv), 0, "", "")

    async def put(self, local: Path, remote: str) -> None:
        self.calls.append(("put", remote))

    async def close(self) -> None:
        pass


def _ops(run_as: str | None) -> tuple[DeviceOps, Recorder]:
    spec = TransportSpec(
        kind="ssh", root="/var/lib/fovea", agent="/opt/fovea/venv/bin/fovea-agent",
        address="10.0.0.5", run_as=run_as,
    )  # fmt: skip
    device = Device(host="xavier", url="http://10.0.0.5:8000", token="t", transport=spec)
    tr = Recorder()
    return DeviceOps(device, tr), tr


def test_install_and_rollback_run_as_the_service_user(tmp_path: Path) -> None:
    ops, tr = _ops("fovea")
    asyncio.run(ops.install_bundle(Path("dr-v4.tar")))
    asyncio.run(ops.rollback_bundle())
    agent, root = "/opt/fovea/venv/bin/fovea-agent", "/var/lib/fovea"
    runuser = ("runuser", "-u", "fovea", "--", agent)
    assert tr.calls[1] == (*runuser, "install", f"{root}/incoming/dr-v4.tar", "--root", root)
    assert tr.calls[2] == (*runuser, "rollback", "--root", root)
    ops, tr = _ops(None)  # a device without a service user: as the SSH login user, as before
    asyncio.run(ops.install_bundle(Path("dr-v4.tar")))
    assert tr.calls[1][0] == agent
    # the setting survives the inventory
    inventory = Inventory(tmp_path / "fleet.db")
    inventory.add(_ops("fovea")[0].device)
    assert inventory.get("xavier").transport.run_as == "fovea"
