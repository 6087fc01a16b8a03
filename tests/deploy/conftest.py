"""Shared deploy fixtures: a real OpenSSH server on 127.0.0.1 with throwaway keys.

Under CI=true a missing /usr/sbin/sshd fails the tests that need it; elsewhere they skip.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshServer:
    """One running sshd: where it listens, and the files a client needs to log in."""

    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_pub: Path

    def target(self, **kwargs: object) -> object:
        """An ``SshTarget`` for this server (host key checked against ``known_hosts``)."""
        from deploy.transport import SshTarget

        defaults: dict[str, object] = {
            "host": "127.0.0.1", "port": self.port, "user": self.user,
            "client_keys": (self.client_key,), "known_hosts": self.known_hosts,
        }  # fmt: skip
        return SshTarget(**{**defaults, **kwargs})  # type: ignore[arg-type]


def _require_sshd() -> None:
    if SSHD.is_file():
        return
    message = f"{SSHD} not found: install openssh-server (.ci/run does)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def ssh_client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway ed25519 client key (private key path; ``.pub`` beside it)."""
    _require_sshd()
    return _keygen(tmp_path_factory.mktemp("ssh-client") / "id_ed25519")


@pytest.fixture
def start_sshd(
    ssh_client_key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], SshServer]]:
    """Factory: each call starts one more sshd (own host key, own port); all stop at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory

    def start() -> SshServer:
        d = tmp_path_factory.mktemp("sshd")
        host_key = _keygen(d / "host_ed25519")
        (d / "authorized_keys").write_text(ssh_client_key.with_suffix(".pub").read_text())
        port = _free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\n"
            "Subsystem sftp internal-sftp\nMaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n"
        )
        log = (d / "sshd.log").open("wb")
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited {proc.returncode}: {(d / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"sshd on port {port} did not listen within 10 s")
        public = host_key.with_suffix(".pub").read_text().split()
        known = d / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
        host_pub = host_key.with_suffix(".pub")
        return SshServer(port, getpass.getuser(), ssh_client_key, known, host_pub)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def sshd(start_sshd: Callable[[], SshServer]) -> SshServer:
    """One running sshd on 127.0.0.1."""
    return start_sshd()
