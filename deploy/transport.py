"""How the workstation reaches a device: run a command, copy a file, over SSH or on this machine.

Two implementations of one small :class:`Transport` protocol:

- :class:`SshTransport` talks to a device over SSH (asyncssh): key authentication only, the
  host key checked against a known_hosts file by default.
- :class:`LocalTransport` treats this machine as the device (a device root in a local folder):
  subprocesses and file copies, for demos and tests.

Copies are resumable and idempotent: a file whose size and sha256 already match is skipped,
data goes to ``<remote>.part`` first (an interrupted copy continues from where it stopped) and
is renamed into place only when its sha256 matches the local file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncssh

__all__ = [
    "CommandFailed",
    "CommandTimeout",
    "HostKeyRejected",
    "HostUnreachable",
    "LocalTransport",
    "RunResult",
    "SshTarget",
    "SshTransport",
    "Transport",
    "TransportError",
    "file_sha256",
]

_CHUNK = 1 << 20


class TransportError(RuntimeError):
    """Something went wrong talking to a device; the message names the host."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class HostUnreachable(TransportError):
    """The device did not answer (connection refused, timed out, name not resolved)."""


class HostKeyRejected(TransportError):
    """The device's SSH host key is unknown or differs from the known_hosts entry."""


class CommandFailed(TransportError):
    """A command on the device exited non-zero (raised by :meth:`RunResult.check`)."""


class CommandTimeout(TransportError):
    """A command on the device ran past its timeout."""


@dataclass(frozen=True)
class RunResult:
    """What a command on a device did: its exit status and output (text)."""

    host: str
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.rc == 0

    def check(self) -> RunResult:
        """Return self when the command succeeded, else raise :class:`CommandFailed`."""
        if self.rc != 0:
            tail = (self.stderr.strip() or self.stdout.strip())[-2000:]
            raise CommandFailed(
                self.host, f"`{shlex.join(self.argv)}` exited {self.rc}: {tail or '(no output)'}"
            )
        return self


@runtime_checkable
class Transport(Protocol):
    """Run commands on and copy files to one device."""

    host: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``argv`` on the device (no shell) and return its exit status and output."""
        ...

    async def put(self, local: Path, remote: str) -> None:
        """Copy ``local`` to the absolute path ``remote`` (resumable; skipped when identical)."""
        ...

    async def close(self) -> None:
        """Release the connection (idempotent)."""
        ...


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a local file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _env_argv(argv: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
    if not env:
        return list(argv)
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv]


class LocalTransport:
    """This machine as the device: commands run as subprocesses, paths are local paths."""

    def __init__(self, host_name: str = "localhost") -> None:
        self.host = host_name

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``argv`` here; ``env`` adds to this process's environment."""
        full_env = {**os.environ, **(env or {})}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=full_env,
            )
        except FileNotFoundError as e:
            return RunResult(self.host, tuple(argv), 127, "", f"{argv[0]}: {e.strerror}")
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CommandTimeout(
                self.host, f"`{shlex.join(argv)}` ran longer than {timeout:g} s"
            ) from None
        rc = proc.returncode if proc.returncode is not None else -1
        return RunResult(
            self.host, tuple(argv), rc, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def put(self, local: Path, remote: str) -> None:
        """Copy ``local`` to ``remote`` through ``remote.part``; skip when already identical."""
        await asyncio.to_thread(self._put_sync, Path(local), Path(remote))

    def _put_sync(self, local: Path, dest: Path) -> None:
        want = file_sha256(local)
        same_size = dest.is_file() and dest.stat().st_size == local.stat().st_size
        if same_size and file_sha256(dest) == want:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        size = local.stat().st_size
        offset = part.stat().st_size if part.is_file() else 0
        if offset > size:
            part.unlink()
            offset = 0
        with local.open("rb") as src, part.open("ab") as out:
            src.seek(offset)
            shutil.copyfileobj(src, out, _CHUNK)
        if file_sha256(part) != want:  # a stale .part from another file: start over once
            part.unlink()
            shutil.copyfile(local, part)
        shutil.copymode(local, part)
        os.replace(part, dest)

    async def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class SshTarget:
    """How to reach one device over SSH.

    ``known_hosts`` is the file host keys are checked against (None: ``~/.ssh/known_hosts``);
    ``check_host_key=False`` turns checking off and should only be used on a trusted network.
    """

    host: str
    port: int = 22
    user: str = "root"
    client_keys: tuple[Path, ...] = ()
    known_hosts: Path | None = None
    check_host_key: bool = True
    connect_timeout: float = 15.0
    name: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("SshTarget.host is empty: give a host name or address")
        if not 0 < self.port < 65536:
            raise ValueError(f"SshTarget.port {self.port} for {self.host} is not in 1..65535")
        if self.connect_timeout <= 0:
            raise ValueError(f"SshTarget.connect_timeout must be > 0, got {self.connect_timeout}")

    @property
    def display(self) -> str:
        """The name shown in progress and reports (``name`` or ``user@host:port``)."""
        return self.name or f"{self.user}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, spec: str, **kwargs: object) -> SshTarget:
        """Parse ``[user@]host[:port]`` (``[v6addr]:port`` for IPv6); kwargs set the rest."""
        user = "root"
        rest = spec
        if "@" in rest:
            user, rest = rest.rsplit("@", 1)
        port = 22
        if rest.startswith("["):
            addr, _, tail = rest[1:].partition("]")
            host = addr
            if tail.startswith(":"):
                port = _parse_port(spec, tail[1:])
        elif rest.count(":") == 1:
            host, port_s = rest.split(":")
            port = _parse_port(spec, port_s)
        else:
            host = rest
        return cls(host=host, port=port, user=user or "root", **kwargs)  # type: ignore[arg-type]


def _parse_port(spec: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"host {spec!r}: port {text!r} is not a number") from None


class SshTransport:
    """A device reached over SSH; connects on first use and keeps one connection."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.host = target.display
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> asyncssh.SSHClientConnection:
        import asyncssh

        async with self._lock:
            if self._conn is not None:
                return self._conn
            t = self.target
            known_hosts: object
            if not t.check_host_key:
                known_hosts = None
            elif t.known_hosts is not None:
                known_hosts = str(t.known_hosts)
            else:
                known_hosts = ()  # asyncssh's default: ~/.ssh/known_hosts
            kwargs: dict[str, object] = {
                "port": t.port,
                "username": t.user,
                "connect_timeout": t.connect_timeout,
                "agent_path": None,
                "password": None,
                "kbdint_auth": False,
            }
            if known_hosts != ():
                kwargs["known_hosts"] = known_hosts
            if t.client_keys:
                kwargs["client_keys"] = [str(k) for k in t.client_keys]
            try:
                self._conn = await asyncssh.connect(t.host, **kwargs)
            except asyncssh.HostKeyNotVerifiable as e:
                where = t.known_hosts or "~/.ssh/known_hosts"
                raise HostKeyRejected(
                    self.host,
                    f"host key not accepted ({e.reason}); checked against {where}. If the device "
                    f"was reinstalled, verify its new key and replace the entry "
                    f"(ssh-keygen -R '[{t.host}]:{t.port}' -f {where}; then ssh-keyscan)",
                ) from None
            except asyncssh.PermissionDenied as e:
                raise TransportError(
                    self.host,
                    f"SSH login as {t.user!r} refused ({e.reason}); install the workstation's "
                    f"public key in the device's authorized_keys",
                ) from None
            except (OSError, TimeoutError, asyncssh.ConnectionLost) as e:
                raise HostUnreachable(
                    self.host,
                    f"cannot connect to {t.host} port {t.port} ({e or type(e).__name__}); check "
                    f"that the device is on, on the network and runs sshd",
                ) from None
            except asyncssh.Error as e:
                raise TransportError(self.host, f"SSH connection failed: {e.reason}") from None
            return self._conn

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``argv`` on the device; ``env`` is set with ``env K=V`` (no AcceptEnv needed)."""
        conn = await self._connection()
        command = shlex.join(_env_argv(argv, env))
        try:
            result = await asyncio.wait_for(conn.run(command, check=False), timeout)
        except TimeoutError:
            raise CommandTimeout(
                self.host, f"`{shlex.join(argv)}` ran longer than {timeout:g} s"
            ) from None
        rc = result.exit_status if result.exit_status is not None else -1
        return RunResult(self.host, tuple(argv), rc, _text(result.stdout), _text(result.stderr))

    async def _remote_sha256(self, path: str) -> str | None:
        res = await self.run(["sha256sum", "--", path])
        if not res.ok or not res.stdout:
            return None
        return res.stdout.split()[0]

    async def put(self, local: Path, remote: str) -> None:
        """Copy over SFTP through ``remote.part``, resuming a partial copy; skip when identical."""
        local = Path(local)
        size = local.stat().st_size
        want = await asyncio.to_thread(file_sha256, local)
        conn = await self._connection()
        part = remote + ".part"
        async with conn.start_sftp_client() as sftp:
            same_size = await sftp.isfile(remote) and (await sftp.stat(remote)).size == size
            if same_size and await self._remote_sha256(remote) == want:
                return
            parent = remote.rsplit("/", 1)[0] or "/"
            await sftp.makedirs(parent, exist_ok=True)
            offset = 0
            if await sftp.isfile(part):
                offset = (await sftp.stat(part)).size or 0
            if offset > size:
                await sftp.remove(part)
                offset = 0
            await self._append(sftp, local, part, offset)
            if await self._remote_sha256(part) != want:  # stale .part of another file
                await sftp.remove(part)
                await self._append(sftp, local, part, 0)
                if await self._remote_sha256(part) != want:
                    raise TransportError(
                        self.host, f"copy of {local} to {remote} is corrupt after a full retry"
                    )
            await sftp.chmod(part, local.stat().st_mode & 0o777)
            await sftp.posix_rename(part, remote)

    @staticmethod
    async def _append(sftp: asyncssh.SFTPClient, local: Path, part: str, offset: int) -> None:
        async with sftp.open(part, "r+b" if offset else "wb") as out:
            with local.open("rb") as src:
                src.seek(offset)
                while chunk := src.read(_CHUNK):
                    await out.write(chunk, offset)
                    offset += len(chunk)

    async def close(self) -> None:
        """Close the SSH connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None


def _text(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data)
