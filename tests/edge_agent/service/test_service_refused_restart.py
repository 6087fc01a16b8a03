"""A served slot that fails its re-check does not stay refused until someone notices: after
``refused_restart_s`` of 503s the agent exits non-zero, and started again (as its supervisor
does) it serves the other slot, which verifies."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from test_service_integrity import MODEL, _export, _flip_byte

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.install import DeviceRoot, install

pytestmark = pytest.mark.slow


def _serve(root: DeviceRoot, port: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", "from edge_agent.cli import main; main()", "serve",
           "--root", str(root.path), "--port", str(port)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ready(port: int, proc: subprocess.Popen[str], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the agent was not ready in time")


def test_a_slot_refused_while_serving_restarts_onto_the_slot_that_verifies(
    tmp_path: Path,
) -> None:
    private, public = generate_keypair(tmp_path / "keys", "publisher")
    root = DeviceRoot(tmp_path / "device").ensure()
    shutil.copy(public, root.keys.trusted / "publisher.pub")
    for version, favourite in ((1, 0), (2, 2)):
        export = _export(tmp_path / f"e{version}", favourite)
        install(root, build_bundle(export, tmp_path / f"v{version}.tar", version, private))
    (root.path / "agent.yaml").write_text(
        "threads: 1\nverify_interval_s: 0.3\nrefused_restart_s: 1.0\nlog_level: warning\n"
    )
    port = free_port()
    first = _serve(root, port)
    _ready(port, first)
    _flip_byte(root.slot("b") / MODEL)  # v2, the served slot, changes under the agent
    refused_at = None
    deadline = time.monotonic() + 30
    while first.poll() is None and time.monotonic() < deadline:
        try:
            status = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code
        except httpx.TransportError:
            status = 0
        if status == 503 and refused_at is None:
            refused_at = time.monotonic()
        time.sleep(0.05)
    output = first.stdout.read() if first.stdout else ""
    assert first.returncode == 1, output  # non-zero: systemd's Restart=on-failure restarts it
    assert refused_at is not None and "exited so the supervisor starts the agent again" in output
    second = _serve(root, port)
    try:
        _ready(port, second)
        assert root.active_slot() == "a"  # rolled back to v1, which verifies
    finally:
        second.terminate()
        second.wait(timeout=30)
