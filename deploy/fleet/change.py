"""What a rollout changes on each device: a model bundle, or the agent itself (a wheel)."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from deploy.fleet.device import DeviceError, DeviceOps, wheel_version
from edge_agent.bundle import MANIFEST_NAME, BundleError, Manifest


class Change(Protocol):
    """One kind of change a rollout carries to each device, and the way back."""

    kind: str
    artifact: Path

    @property
    def target(self) -> str:
        """The version the change brings."""
        ...

    async def current(self, ops: DeviceOps) -> str | None:
        """The version the device has now (None if it cannot tell)."""
        ...

    async def apply(self, ops: DeviceOps, before: str | None) -> None:
        """Put the change on the device and restart the agent (not yet checked)."""
        ...

    async def verify(self, ops: DeviceOps) -> None:
        """After the agent is ready: check it really runs the target; DeviceError if not."""
        ...

    def changed(self, ops: DeviceOps) -> bool:
        """True once apply() altered the device (so there is something to revert)."""
        ...

    async def revert(self, ops: DeviceOps) -> None:
        """Undo apply() and restart the agent."""
        ...


def read_manifest(bundle: Path) -> Manifest:
    """The (unverified) manifest of a bundle tar: for naming versions before devices verify it."""
    try:
        with tarfile.open(bundle, "r:*") as tar:
            member = tar.extractfile(MANIFEST_NAME)
            if member is None:
                raise BundleError(f"{bundle}: {MANIFEST_NAME} is not a file")
            return Manifest.from_bytes(member.read(), str(bundle))
    except KeyError:
        raise BundleError(f"{bundle}: no {MANIFEST_NAME}; is it a Fovea bundle?") from None
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{bundle}: not a readable bundle tar: {exc}") from None


@dataclass
class BundleChange:
    """Install a signed bundle (``fovea-agent install``); back: ``fovea-agent rollback``."""

    artifact: Path
    kind: str = "bundle"
    manifest: Manifest = field(init=False)
    _installed: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.manifest = read_manifest(self.artifact)

    @property
    def target(self) -> str:
        """The bundle's version."""
        return str(self.manifest.version)

    async def current(self, ops: DeviceOps) -> str | None:
        """The bundle version the agent serves."""
        version = await ops.served_version()
        return None if version is None else str(version)

    async def apply(self, ops: DeviceOps, before: str | None) -> None:
        """Copy, install into the inactive slot, restart."""
        await ops.install_bundle(self.artifact)
        self._installed.add(ops.device.host)  # install switched slots: rollback undoes it
        await ops.restart()

    async def verify(self, ops: DeviceOps) -> None:
        """The agent serves the bundle's version."""
        served = await ops.served_version()
        if served != self.manifest.version:
            raise DeviceError(
                f"{ops.device.host}: after the install the agent serves version {served}, "
                f"not {self.manifest.version}"
            )

    def changed(self, ops: DeviceOps) -> bool:
        """True once the install switched slots on this device."""
        return ops.device.host in self._installed

    async def revert(self, ops: DeviceOps) -> None:
        """Switch back to the previous slot and restart."""
        await ops.rollback_bundle()
        self._installed.discard(ops.device.host)
        await ops.restart()


@dataclass
class AgentChange:
    """Upgrade the agent to a fovea-edge wheel; back: the device's kept wheel of the old one.

    Wheels live in the device's wheelhouse (``TransportSpec.wheels``: ``PREFIX/wheels`` for a
    flashed device, where flash leaves the wheel it installed); each upgrade leaves its wheel
    there too, so the next upgrade can go back to it.
    """

    artifact: Path
    kind: str = "agent"
    _previous: dict[str, str] = field(default_factory=dict, init=False)
    _installed: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        wheel_version(self.artifact)  # refuse a file that is not a fovea-edge wheel up front

    @property
    def target(self) -> str:
        """The wheel's version."""
        return wheel_version(self.artifact)

    async def current(self, ops: DeviceOps) -> str | None:
        """The installed agent version."""
        return await ops.agent_version()

    async def apply(self, ops: DeviceOps, before: str | None) -> None:
        """Check the way back exists, copy and pip-install the wheel, restart."""
        host = ops.device.host
        previous = await ops.wheel_for(before) if before else None
        if previous is None:
            raise DeviceError(
                f"{host}: no wheel of its current agent ({before}) in {ops.wheelhouse()}, so an "
                "upgrade could not be rolled back; copy that wheel there (or re-flash the device "
                "from a wheel) and run the upgrade again"
            )
        self._previous[host] = previous
        await ops.install_wheel(self.artifact)
        self._installed.add(host)
        await ops.restart()

    async def verify(self, ops: DeviceOps) -> None:
        """The device's agent reports the wheel's version."""
        now = await ops.agent_version()
        if now != self.target:
            raise DeviceError(
                f"{ops.device.host}: agent is {now} after the upgrade, not {self.target}"
            )

    def changed(self, ops: DeviceOps) -> bool:
        """True once the new wheel was installed on this device."""
        return ops.device.host in self._installed

    async def revert(self, ops: DeviceOps) -> None:
        """Reinstall the previous wheel and restart."""
        await ops.reinstall_wheel(self._previous[ops.device.host])
        self._installed.discard(ops.device.host)
        await ops.restart()


__all__ = ["AgentChange", "BundleChange", "Change", "read_manifest"]
