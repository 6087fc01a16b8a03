"""Starting Flower's SuperLink for a federation: its command line, connection and run config files.

The ``fovea federation start`` command and the demo's loopback federation both use these.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from server.federation.settings import FederationSettings

APP_DIR = Path(__file__).resolve().parents[2]
"""The project root: its pyproject.toml declares the Flower App."""
CONNECTION = "fovea"


@dataclass(frozen=True)
class LinkOptions:
    """How the SuperLink listens: address, TLS files, SuperNode authentication."""

    host: str = "127.0.0.1"
    port: int = 8000
    tls_dir: Path | None = None
    supernode_auth: bool = False
    register: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.register and not self.supernode_auth:
            raise ValueError("--register only makes sense with --supernode-auth")
        if self.supernode_auth and self.tls_dir is None:
            raise ValueError("SuperNode authentication requires TLS: pass --tls-dir")
        if self.tls_dir is not None:
            missing = [n for n in ("ca.crt", "server.pem", "server.key")
                       if not (self.tls_dir / n).is_file()]  # fmt: skip
            if missing:
                raise ValueError(f"--tls-dir {self.tls_dir} lacks {', '.join(missing)}")
        for key in self.register:
            if not key.is_file():
                raise ValueError(f"--register {key}: no such public key file")

    @property
    def address(self) -> str:
        """host:port for the CLI and the SuperNodes."""
        return f"{self.host}:{self.port}"


def superlink_command(link: LinkOptions, database: Path, bin_dir: Path) -> list[str]:
    """The ``flower-superlink`` command line (no runtime dependency installation: no network)."""
    cmd = [
        str(bin_dir / "flower-superlink"),
        "--disable-runtime-dependency-installation",
        "--database", str(database),
        "--host", link.host,
        "--port", str(link.port),
    ]  # fmt: skip
    if link.tls_dir is None:
        cmd.append("--insecure")
    else:
        cmd += [
            "--ssl-ca-certfile", str(link.tls_dir / "ca.crt"),
            "--ssl-certfile", str(link.tls_dir / "server.pem"),
            "--ssl-keyfile", str(link.tls_dir / "server.key"),
        ]  # fmt: skip
    if link.supernode_auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def connection_toml(link: LinkOptions) -> str:
    """``$FLWR_HOME/config.toml`` with the one connection ``flwr run`` uses."""
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f"address = {json.dumps(link.address)}"]  # fmt: skip
    if link.tls_dir is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(link.tls_dir / 'ca.crt'))}")
    return "\n".join(lines) + "\n"


def run_config_toml(settings: FederationSettings) -> str:
    """The run config as a flat TOML file for ``flwr run --run-config FILE.toml``."""
    out = []
    for key, value in settings.to_run_config().items():
        text = ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)
        out.append(f"{key} = {text}")
    return "\n".join(out) + "\n"


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the SuperLink ``proc`` listens on ``host:port``; raise if it exits or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not listen on {host}:{port} within {timeout:g} s")


def run_outcome(log: Path, env: dict[str, str], bin_dir: Path) -> tuple[str, str]:
    """(status, details) of the run ``flwr run`` logged to ``log``, as ``flwr ls`` reports it."""
    run_id = None
    for line in log.read_text(errors="replace").splitlines():
        if "Successfully started run" in line:
            run_id = line.rsplit(" ", 1)[-1].strip()
    if run_id is None:
        return "not-started", "flwr run did not start a run"
    out = subprocess.run(
        [str(bin_dir / "flwr"), "ls", CONNECTION, "--run-id", run_id, "--format", "json"],
        capture_output=True, text=True, env=env, cwd=APP_DIR, timeout=60,
    )  # fmt: skip
    try:
        run = json.loads(out.stdout)["runs"][0]
        return str(run["status"]), str(run.get("status-details", ""))
    except (ValueError, KeyError, IndexError):
        return "unknown", f"flwr ls gave no run status: {(out.stdout + out.stderr)[-500:]}"


def register_supernodes(link: LinkOptions, env: dict[str, str], bin_dir: Path) -> list[Path]:
    """Register each of ``link.register``'s SuperNode public keys with the running SuperLink."""
    for key in link.register:
        reg = subprocess.run(
            [str(bin_dir / "flwr"), "supernode", "register", str(key), CONNECTION],
            capture_output=True, text=True, env=env, cwd=APP_DIR,
        )  # fmt: skip
        if reg.returncode:
            raise RuntimeError(f"registering SuperNode key {key} failed:\n"
                               f"{(reg.stdout + reg.stderr).strip()[-1500:]}")  # fmt: skip
    return list(link.register)


@contextmanager
def running_superlink(
    link: LinkOptions, state: Path, env: dict[str, str], bin_dir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A SuperLink process listening as ``link`` says, its log in ``state``; stopped on exit."""
    log = (state / "superlink.log").open("ab")
    proc = subprocess.Popen(
        superlink_command(link, state / "state.db", bin_dir),
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=APP_DIR,
    )  # fmt: skip
    try:
        wait_port(link.host, link.port, proc, 60)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
