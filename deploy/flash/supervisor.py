"""Keeping the agent running on a device: systemd where PID 1 is systemd, else a process keeper.

Both sit behind the small :class:`Supervisor` interface (install the service, start, restart,
stop, ask whether it runs), which flashing and fleet rollouts use alike.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from deploy.flash.remote import read_text, sh, write_text
from deploy.transport import Transport, TransportError

_MEMORY = re.compile(r"^(\d+[KMGT]?|\d{1,2}%|100%|infinity)$")
DEVICE_GROUPS = ("video", "render")
"""Groups the service user joins where they exist: on a Jetson ``/dev/nvhost-*`` and
``/dev/nvmap`` are root:video (outside it CUDA finds no device); ``render`` owns DRM render
nodes on newer releases."""


@dataclass(frozen=True)
class ServiceSpec:
    """The agent service on one device: what runs, as whom, what it may write and use.

    Resource limits (systemd units only): ``open_files`` (``LimitNOFILE``: every connection,
    uploaded image, SQLite connection and model file is a descriptor; systemd's default soft
    limit is 1024), ``tasks_max`` (``TasksMax``: threads and processes, ONNX Runtime's and
    TensorRT's worker included), ``memory_high`` (``MemoryHigh``: above it the kernel reclaims
    the agent's memory hard and slows it, nothing is killed) and ``memory_max`` (``MemoryMax``:
    the agent is killed above it and systemd restarts it). Memory takes systemd's syntax:
    bytes with K/M/G/T, a percentage of the device's RAM, or ``infinity``. On a Jetson the GPU
    shares that RAM, hence percentages that leave room for the rest of the system.
    """

    name: str
    argv: tuple[str, ...]
    root: str
    prefix: str
    user: str = "fovea"
    python: str = "python3"
    environment: tuple[tuple[str, str], ...] = field(default=(("PYTHONUNBUFFERED", "1"),))
    open_files: int = 65536
    tasks_max: int = 512
    memory_high: str = "75%"
    memory_max: str = "90%"

    def __post_init__(self) -> None:
        if self.open_files < 1024 or self.tasks_max < 16:
            raise ValueError(
                f"service {self.name}: open_files must be >= 1024 and tasks_max >= 16 "
                f"(got {self.open_files}, {self.tasks_max})"
            )
        for key in ("memory_high", "memory_max"):
            if not _MEMORY.match(getattr(self, key)):
                raise ValueError(
                    f"service {self.name}: {key}={getattr(self, key)!r} is not a systemd memory "
                    "size (e.g. 3G, 512M, 75%, infinity)"
                )

    @property
    def log(self) -> str:
        """Where the process keeper writes the agent's output."""
        return f"{self.prefix}/run/{self.name}.log"

    @property
    def pidfile(self) -> str:
        """The process keeper's pid file (the agent's pid is in ``<pidfile>.child``)."""
        return f"{self.prefix}/run/{self.name}.pid"


def render_unit(spec: ServiceSpec) -> str:
    """A hardened systemd unit for the agent (restart on failure, own user, sandboxed, with
    the spec's resource limits)."""
    env = "\n".join(f"Environment={k}={v}" for k, v in spec.environment)
    return f"""\
[Unit]
Description=Fovea edge agent (retinal screening, KServe v2)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={spec.user}
Group={spec.user}
ExecStart={shlex.join(spec.argv)}
WorkingDirectory={spec.root}
{env}
Restart=on-failure
RestartSec=5
TimeoutStopSec=30
LimitNOFILE={spec.open_files}
TasksMax={spec.tasks_max}
MemoryHigh={spec.memory_high}
MemoryMax={spec.memory_max}
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={spec.root}
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


@runtime_checkable
class Supervisor(Protocol):
    """Start, restart and stop the agent service on one device."""

    kind: str

    async def install(self, spec: ServiceSpec) -> bool:
        """Set up the service (idempotent); True when anything changed."""
        ...

    async def start(self) -> None:
        """Start the service unless it runs."""
        ...

    async def restart(self) -> None:
        """Restart the service (start it when stopped)."""
        ...

    async def stop(self) -> None:
        """Stop the service."""
        ...

    async def is_active(self) -> bool:
        """Whether the service runs."""
        ...


async def ensure_service_user(
    transport: Transport, user: str, home: str, groups: tuple[str, ...] = DEVICE_GROUPS
) -> list[str]:
    """Create the system user unless it exists, and add it to each of ``groups`` that exists
    on the device (an existing user is amended with ``usermod -aG``); returns the groups of
    ``groups`` it is in now."""
    u = shlex.quote(user)
    script = (
        f"id -u {u} >/dev/null 2>&1 || useradd --system --no-create-home "
        f"--home-dir {shlex.quote(home)} --shell /usr/sbin/nologin {u} || exit 1\n"
        f"for g in {' '.join(shlex.quote(g) for g in groups)}; do\n"
        f'  getent group "$g" >/dev/null || continue\n'
        f'  id -nG {u} | tr " " "\\n" | grep -qx "$g" || usermod -aG "$g" {u} || exit 1\n'
        f'  echo "$g"\n'
        f"done\n"
    )
    res = (await sh(transport, script)).check()
    return res.stdout.split()


class SystemdSupervisor:
    """The agent as a systemd unit, run by a dedicated system user."""

    kind = "systemd"

    def __init__(self, transport: Transport, name: str) -> None:
        self.transport = transport
        self.name = name

    @property
    def unit_path(self) -> str:
        """Where the unit file goes."""
        return f"/etc/systemd/system/{self.name}.service"

    async def _ctl(self, *args: str) -> None:
        (await self.transport.run(["systemctl", *args], timeout=120)).check()

    async def install(self, spec: ServiceSpec) -> bool:
        """Create the user (in video/render), write the unit, hand the root to the user,
        reload, enable."""
        await ensure_service_user(self.transport, spec.user, spec.root)
        (await self.transport.run(["chown", "-R", f"{spec.user}:{spec.user}", spec.root])).check()
        changed = await write_text(self.transport, self.unit_path, render_unit(spec))
        if changed:
            await self._ctl("daemon-reload")
        await self._ctl("enable", f"{self.name}.service")
        return changed

    async def start(self) -> None:
        """``systemctl start``."""
        await self._ctl("start", f"{self.name}.service")

    async def restart(self) -> None:
        """``systemctl restart``."""
        await self._ctl("restart", f"{self.name}.service")

    async def stop(self) -> None:
        """``systemctl stop``."""
        await self._ctl("stop", f"{self.name}.service")

    async def is_active(self) -> bool:
        """``systemctl is-active``."""
        res = await self.transport.run(["systemctl", "is-active", "--quiet", self.name])
        return res.ok


class ProcessSupervisor:
    """The agent under ``python -m deploy.flash.keeper``, started detached with a pid file."""

    kind = "process"

    def __init__(self, transport: Transport, spec: ServiceSpec) -> None:
        self.transport = transport
        self.spec = spec

    @property
    def _spec_file(self) -> str:
        return f"{self.spec.prefix}/run/{self.spec.name}.cmd"

    async def _pid(self) -> int | None:
        text = await read_text(self.transport, self.spec.pidfile)
        if not text or not text.strip().isdigit():
            return None
        pid = int(text.strip())
        alive = await self.transport.run(["kill", "-0", str(pid)])
        return pid if alive.ok else None

    async def install(self, spec: ServiceSpec) -> bool:
        """Record the command; a changed command restarts a running keeper."""
        self.spec = spec
        await self.transport.run(["mkdir", "-p", f"{spec.prefix}/run"])
        changed = await write_text(self.transport, self._spec_file, shlex.join(spec.argv) + "\n")
        if changed and await self._pid() is not None:
            await self.stop()
        return changed

    async def start(self) -> None:
        """Start the keeper detached (setsid, output to the log) unless it runs."""
        if await self._pid() is not None:
            return
        s = self.spec
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in s.environment)
        keeper = [s.python, "-m", "deploy.flash.keeper", "--pidfile", s.pidfile, "--", *s.argv]
        script = (
            f"cd {shlex.quote(s.root)} && {env} setsid {shlex.join(keeper)} "
            f">>{shlex.quote(s.log)} 2>&1 </dev/null &"
        )
        (await sh(self.transport, script)).check()
        for _ in range(50):
            if await self._pid() is not None:
                return
            await asyncio.sleep(0.1)
        raise TransportError(self.transport.host, f"the process keeper did not start; see {s.log}")

    async def restart(self) -> None:
        """SIGHUP to the keeper (it restarts the agent), or start it."""
        pid = await self._pid()
        if pid is None:
            await self.start()
        else:
            (await self.transport.run(["kill", "-HUP", str(pid)])).check()

    async def stop(self) -> None:
        """SIGTERM to the keeper, which stops the agent; waits until both are gone."""
        pid = await self._pid()
        if pid is None:
            return
        await self.transport.run(["kill", "-TERM", str(pid)])
        for _ in range(300):
            if await self._pid() is None:
                return
            await asyncio.sleep(0.1)
        raise TransportError(self.transport.host, f"keeper pid {pid} did not stop in 30 s")

    async def is_active(self) -> bool:
        """Whether the keeper runs."""
        return await self._pid() is not None


async def detect_supervisor(transport: Transport, spec: ServiceSpec, kind: str) -> Supervisor:
    """The supervisor for a device: systemd when asked or when PID 1 is systemd and we are root
    (``auto``), else the process keeper."""
    if kind == "auto":
        probe = await sh(transport, 'test -d /run/systemd/system && test "$(id -u)" = 0')
        kind = "systemd" if probe.ok else "process"
    if kind == "systemd":
        return SystemdSupervisor(transport, spec.name)
    if kind == "process":
        return ProcessSupervisor(transport, spec)
    raise ValueError(f"{transport.host}: unknown supervisor {kind!r}; use auto, systemd or process")
