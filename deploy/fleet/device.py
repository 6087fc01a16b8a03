"""What the fleet does on one device through its Transport: install, roll back, restart, ask."""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from deploy.flash import WHEEL_STAMP
from deploy.fleet import probe
from deploy.fleet.inventory import Device, TransportSpec
from deploy.transport import LocalTransport, SshTarget, SshTransport, Transport, TransportError

Connect = Callable[[Device], Transport]
"""Makes the transport to one device (tests and demos can pass their own)."""

INCOMING = "incoming"
"""Folder of the device root where bundles are copied before they are installed."""
AGENT_EXTRAS = "agent"
"""The fovea-edge extra a device's agent is installed with."""
COMMAND_TIMEOUT_S = 600.0
_PIP_ENV = {"PIP_CONFIG_FILE": "/dev/null"}  # the device's wheelhouse only, as flash installs
_WHEEL = re.compile(r"^fovea_edge-([^-]+)-.*\.whl$")


class DeviceError(RuntimeError):
    """A step failed on a device; the message names the host and the step."""


def connect(device: Device) -> Transport:
    """The transport the inventory describes for ``device`` (SSH: host keys checked)."""
    spec: TransportSpec = device.transport
    if spec.kind == "local":
        return LocalTransport(device.host)
    assert spec.address is not None, f"{device.host}: an ssh device needs an address"
    target = SshTarget(
        host=spec.address,
        port=spec.port,
        user=spec.user or "root",
        client_keys=(Path(spec.key),) if spec.key else (),
        known_hosts=Path(spec.known_hosts) if spec.known_hosts else None,
        name=device.host,
    )
    return SshTransport(target)


def wheel_version(wheel: Path) -> str:
    """The fovea-edge version in a wheel's file name; ValueError naming the file otherwise."""
    match = _WHEEL.match(wheel.name)
    if match is None:
        raise ValueError(
            f"{wheel} is not a fovea-edge wheel (expected fovea_edge-VERSION-...whl); "
            "build one with `pip wheel --no-deps .`"
        )
    return match.group(1)


class DeviceOps:
    """Fleet operations on one device; each step raises DeviceError naming host and step."""

    def __init__(self, device: Device, transport: Transport) -> None:
        self.device = device
        self.transport = transport
        self.spec = device.transport
        self.steps: dict[str, float] = {}
        self._restarted_at: float | None = None

    def _remote(self, *parts: str) -> str:
        return "/".join([self.spec.root.rstrip("/"), *parts])

    async def _run(
        self,
        step: str,
        argv: list[str],
        timeout: float = COMMAND_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> str:
        t0 = time.perf_counter()
        try:
            result = await self.transport.run(argv, timeout=timeout, env=env)
        except TransportError as exc:
            raise DeviceError(f"{self.device.host}: {step}: {exc}") from None
        finally:
            self.steps[step] = round(self.steps.get(step, 0.0) + time.perf_counter() - t0, 3)
        if not result.ok:
            tail = (result.stderr.strip() or result.stdout.strip())[-800:]
            raise DeviceError(
                f"{self.device.host}: {step}: `{shlex.join(argv)}` exited {result.rc}: {tail}"
            )
        return result.stdout

    async def _put(self, step: str, local: Path, remote: str) -> None:
        t0 = time.perf_counter()
        try:
            await self.transport.put(local, remote)
        except (TransportError, OSError) as exc:
            raise DeviceError(f"{self.device.host}: {step}: copying {local}: {exc}") from None
        finally:
            self.steps[step] = round(time.perf_counter() - t0, 3)

    def _agent(self, *args: str) -> list[str]:
        """``fovea-agent ARGS`` on the device, as the service user when one is set."""
        user = ["runuser", "-u", self.spec.run_as, "--"] if self.spec.run_as else []
        return [*user, self.spec.agent, *args]

    async def install_bundle(self, bundle: Path) -> None:
        """Copy ``bundle`` to the device and ``fovea-agent install`` it (not yet served); the
        install measures precision, as the service user where one is set."""
        remote = self._remote(INCOMING, bundle.name)
        await self._put("copy", bundle, remote)
        await self._run("install", self._agent("install", remote, "--root", self.spec.root))

    async def rollback_bundle(self) -> None:
        """``fovea-agent rollback``: switch back to the previous slot."""
        await self._run("rollback", self._agent("rollback", "--root", self.spec.root))

    async def agent_version(self) -> str:
        """The fovea-edge version installed on the device (``fovea-agent version``)."""
        out = await self._run("agent version", [self.spec.agent, "version"], timeout=60)
        return out.strip().split()[-1] if out.strip() else "unknown"

    def wheelhouse(self) -> str:
        """The device's wheel folder (see ``TransportSpec.wheels``); DeviceError when unknown."""
        folder = self.spec.wheels
        if folder is None:
            raise DeviceError(
                f"{self.device.host}: its agent wheel folder is unknown (agent "
                f"{self.spec.agent!r} is not PREFIX/venv/bin/fovea-agent); re-add the device "
                "with `fovea fleet add ... --wheelhouse DIR --replace`"
            )
        return folder

    async def install_wheel(self, wheel: Path) -> None:
        """Copy an agent wheel into the device's wheelhouse (kept there: the way back from the
        next upgrade) and pip-install it into the agent's venv from that wheelhouse only."""
        remote = f"{self.wheelhouse().rstrip('/')}/{wheel.name}"
        await self._put("copy", wheel, remote)
        await self._pip("pip install", remote)

    async def wheel_for(self, version: str) -> str | None:
        """The device's kept wheel of agent ``version`` (for the way back), if it has one."""
        code = (
            "import pathlib,sys; p=pathlib.Path(sys.argv[1]); "
            "print('\\n'.join(str(f) for f in sorted(p.glob('fovea_edge-*.whl'))) if p.is_dir() "
            "else '')"
        )
        folder = self.wheelhouse()
        out = await self._run("find wheel", [self.spec.python, "-c", code, folder], timeout=60)
        for line in out.splitlines():
            if _WHEEL.match(Path(line).name) and wheel_version(Path(line)) == version:
                return line
        return None

    async def reinstall_wheel(self, remote_wheel: str) -> None:
        """pip-install a wheel already on the device (rolling an agent upgrade back)."""
        await self._pip("pip reinstall", remote_wheel)

    async def _pip(self, step: str, remote_wheel: str) -> None:
        # the wheel's own dependencies come from the same wheelhouse (a new agent may need more)
        argv = [self.spec.python, "-m", "pip", "install", "--no-index", "--find-links",
                self.wheelhouse(), "--disable-pip-version-check", "-q"]  # fmt: skip
        await self._run(step, [*argv, f"{remote_wheel}[{AGENT_EXTRAS}]"], env=_PIP_ENV)
        python = Path(self.spec.python)
        if python.is_absolute():  # the venv no longer holds the wheel flash stamped: a re-flash
            stamp = str(python.parents[1] / WHEEL_STAMP)  # installs its own wheel again
            await self._run("pip install", ["rm", "-f", stamp], timeout=60)

    async def restart(self) -> None:
        """Restart the agent with the device's restart command (its supervisor)."""
        if not self.spec.restart:
            raise DeviceError(
                f"{self.device.host}: no restart command is set; re-add it with "
                "`fovea fleet add ... --restart 'COMMAND' --replace`"
            )
        self._restarted_at = time.monotonic()
        await self._run("restart", list(self.spec.restart), timeout=120)

    async def wait_ready(
        self,
        timeout: float,
        build_timeout: float | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """Wait until ``/v2/health/ready`` answers 200 (from an agent started after the last
        restart, since supervisors may restart asynchronously); DeviceError when not in time.

        While the agent answers 503 "starting" (engines building) it is waited on up to
        ``build_timeout`` seconds, its progress passed to ``on_progress``.
        """
        t0 = time.perf_counter()
        try:
            while True:
                spent = time.perf_counter() - t0
                await probe.wait_ready(
                    self.device.url,
                    max(timeout - spent, 0.001),
                    build_timeout=None if build_timeout is None else max(build_timeout - spent, 0),
                    on_progress=on_progress,
                )
                if self._restarted_at is None or await self._fresh():
                    return
                await asyncio.sleep(0.2)
        except TimeoutError as exc:
            raise DeviceError(f"{self.device.host}: health: {exc}") from None
        finally:
            self.steps["ready"] = round(time.perf_counter() - t0, 3)

    async def _fresh(self) -> bool:
        """True when the agent answering started after the last restart command."""
        assert self._restarted_at is not None
        try:
            body = await probe.status(self.device.url, self.device.token)
        except ConnectionError:
            return False
        uptime = body.get("uptime_s")
        return isinstance(uptime, int | float) and uptime <= time.monotonic() - self._restarted_at

    async def served_version(self) -> int | None:
        """The bundle version the running agent serves (``/v1/status``), None if unknown."""
        try:
            body = await probe.status(self.device.url, self.device.token)
        except ConnectionError as exc:
            raise DeviceError(f"{self.device.host}: status: {exc}") from None
        version = body.get("model", {}).get("version")
        return int(version) if isinstance(version, int) else None


__all__ = [
    "AGENT_EXTRAS",
    "INCOMING",
    "Connect",
    "DeviceError",
    "DeviceOps",
    "connect",
    "wheel_version",
]
