"""Fleet fixtures: signed bundles of the tiny export and local devices running real agents.

Each device is a device root on this machine served by a real ``fovea-agent serve`` process on
a 127.0.0.1 port; its restart command is a small script (the stand-in for the supervisor) that
stops the agent by its pid file and starts it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.bundle import build_bundle
from deploy.fleet import Device, Inventory, TransportSpec
from deploy.keys import generate_keypair

AGENT = str(Path(sys.executable).with_name("fovea-agent"))

RESTART = """#!{python}
# Restart the fovea-agent of one local device root: stop it by its pid file, start it again.
import os, signal, subprocess, sys, time
from pathlib import Path

root, port = Path({root!r}), {port}
pid_file = root / "agent.pid"
if pid_file.is_file():
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(150):
        try:
            if "zombie" in Path(f"/proc/{{pid}}/status").read_text():
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
with open(root / "agent.log", "ab") as log:
    proc = subprocess.Popen(
        [{agent!r}, "serve", "--root", str(root), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )
pid_file.write_text(str(proc.pid))
"""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent(*args: str) -> str:
    """Run ``fovea-agent ARGS`` and return its output (fails the test on an error)."""
    done = subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr or done.stdout
    return done.stdout


@dataclass(frozen=True)
class Bundles:
    """Signed bundles of the tiny export: v1, v2, and v3 which ships no fp16 model."""

    v1: Path
    v2: Path
    v3_no_fp16: Path
    public_key: Path


@pytest.fixture(scope="session")
def bundles(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """Three signed bundles (one key)."""
    out = tmp_path_factory.mktemp("fleet-bundles")
    private, public = generate_keypair(out / "keys", "fleet-test")
    v1 = build_bundle(tiny_export, out / "tiny-v1.tar", 1, private)
    v2 = build_bundle(tiny_export, out / "tiny-v2.tar", 2, private)
    no_fp16 = out / "export-no-fp16"
    shutil.copytree(tiny_export, no_fp16)
    (no_fp16 / "model.fp16.onnx").unlink()
    info = json.loads((no_fp16 / "export.json").read_text())
    del info["precisions"]["fp16"]
    (no_fp16 / "export.json").write_text(json.dumps(info))
    v3 = build_bundle(no_fp16, out / "tiny-v3.tar", 3, private)
    return Bundles(v1, v2, v3, public)


@pytest.fixture(scope="session")
def template_root(bundles: Bundles, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A device root with v1 installed and a fleet account; copied for each device."""
    root = tmp_path_factory.mktemp("fleet-template") / "root"
    trusted = root / "keys" / "trusted"
    trusted.mkdir(parents=True)
    shutil.copy(bundles.public_key, trusted / bundles.public_key.name)
    agent("install", str(bundles.v1), "--root", str(root))
    token = agent("users", "add", "fleet", "--role", "admin", "--root", str(root)).split()[-1]
    return root, token


@dataclass
class LocalFleet:
    """Local devices serving real agents, and the inventory that lists them."""

    inventory: Inventory
    roots: dict[str, Path]

    def pid(self, host: str) -> int:
        """The pid of ``host``'s agent now."""
        return int((self.roots[host] / "agent.pid").read_text())

    def add_user(self, host: str, name: str, role: str) -> str:
        """Add an account to ``host``'s agent; its token."""
        return agent("users", "add", name, "--role", role, "--root", str(self.roots[host])).split()[
            -1
        ]

    def log(self, host: str) -> str:
        """``host``'s agent log."""
        return (self.roots[host] / "agent.log").read_text(errors="replace")


def _start(restart: Path, root: Path, port: int, timeout: float = 120.0) -> None:
    subprocess.run([str(restart)], check=True, timeout=60)
    t0 = time.monotonic()
    pid = int((root / "agent.pid").read_text())
    while time.monotonic() - t0 < timeout:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z":
            tail = (root / "agent.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the agent of {root} exited:\n{tail}")
        if _ready(port):  # it listens while still preparing its model ("starting": 503)
            return
        time.sleep(0.2)
    raise RuntimeError(f"the agent of {root} was not ready on {port}: {root / 'agent.log'}")


def _ready(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


@pytest.fixture
def make_fleet(template_root: tuple[Path, str], tmp_path: Path) -> Iterator[object]:
    """Factory: ``make_fleet(["dev-a", ...], pinned={"dev-a": "fp16"})`` -> LocalFleet;
    ``prepare(host, root)`` is called on each device root before its agent starts."""
    template, token = template_root
    started: list[Path] = []

    def make(
        hosts: list[str],
        pinned: dict[str, str] | None = None,
        prepare: Callable[[str, Path], None] | None = None,
    ) -> LocalFleet:
        inventory = Inventory(tmp_path / "fleet.db")
        roots = {}
        for host in hosts:
            root = tmp_path / "devices" / host
            shutil.copytree(template, root, symlinks=True)
            if pinned and host in pinned:  # this device's settings force one precision
                (root / "agent.yaml").write_text(f"precision: {pinned[host]}\n")
            if prepare is not None:
                prepare(host, root)
            port = free_port()
            restart = root.parent / f"{host}-restart"
            restart.write_text(
                RESTART.format(python=sys.executable, root=str(root), port=port, agent=AGENT)
            )
            restart.chmod(0o755)
            _start(restart, root, port)
            started.append(root)
            roots[host] = root
            spec = TransportSpec(kind="local", root=str(root), agent=AGENT, restart=(str(restart),))
            inventory.add(
                Device(host=host, url=f"http://127.0.0.1:{port}", token=token, transport=spec)
            )
        return LocalFleet(inventory, roots)

    yield make
    for root in started:  # stop the agents these tests started, by their pid files
        pid_file = root / "agent.pid"
        if pid_file.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
