"""The real agent on a real device root: CLI install, users, serve (a process), infer, screen."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.cli import app as cli
from edge_agent.install import DeviceRoot

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def installed_root(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device root with the tiny export installed through ``fovea-agent install``."""
    work = tmp_path_factory.mktemp("agent-root")
    private, public = generate_keypair(work / "keys", "publisher")
    root = DeviceRoot(work / "root").ensure()
    root.keys.trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(public, root.keys.trusted / "publisher.pub")
    (root.path / "agent.yaml").write_text("max_batch: 8\nmax_wait_ms: 1.0\nthreads: 1\n")
    bundle = build_bundle(tiny_export, work / "b1.tar", 1, private)
    result = runner.invoke(cli, ["install", str(bundle), "--root", str(root.path)])
    assert result.exit_code == 0, result.output
    assert "installed" in result.output
    again = runner.invoke(cli, ["install", str(bundle), "--root", str(root.path)])
    assert again.exit_code == 1  # same version again is refused
    return root.path


def _token(root: Path, name: str, role: str) -> str:
    result = runner.invoke(cli, ["users", "add", name, "--role", role, "--root", str(root)])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def _start(root: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", "from edge_agent.cli import main; main()", "serve",
           "--root", str(root), "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the agent did not become ready in 60 s")


def test_served_model_answers_like_the_bundle(
    installed_root: Path, tiny_export: Path, fundus: Any, tmp_path: Path
) -> None:
    import socket

    tech = _token(installed_root, "tech", "technician")
    doc = _token(installed_root, "doc", "clinician")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _start(installed_root, port)
    try:
        golden = np.load(tiny_export / "golden.npz")
        x = golden["images"].astype(np.float32)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        inp = httpclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        auth = {"Authorization": f"Bearer {tech}"}
        name = _model_name(port, auth)
        assert client.get_model_metadata(name, headers=dict(auth))["name"] == name
        result = client.infer(name, [inp], headers=dict(auth))
        np.testing.assert_allclose(
            result.as_numpy("grade_logits"), golden["grade_logits"], atol=2e-2
        )
        base = f"http://127.0.0.1:{port}"
        files = {
            "left": ("l.png", fundus(3), "image/png"),
            "right": ("r.png", fundus(4), "image/png"),
        }
        r = httpx.post(f"{base}/v1/screen", files=files, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["version"] == 1 and len(body["eyes"]) == 2
        case = body["eyes"][0]["case_id"]
        r = httpx.post(
            f"{base}/v1/cases/{case}/review",
            json={"grade": 1},
            headers={"Authorization": f"Bearer {doc}"},
        )
        assert r.status_code == 200, r.text
        status = httpx.get(f"{base}/v1/status", headers=auth).json()
        assert status["precision_choice"]["chosen"]["precision"] == status["model"]["precision"]
        assert status["store"]["reviews"] == 1
        head = status["audit_head"]  # what the fleet poll keeps off the device as an anchor
        assert head["seq"] == status["store"]["audit"] and len(head["mac"]) == 64
        metrics = httpx.get(f"{base}/metrics").text
        assert "fovea_batch_size_count" in metrics and "fovea_model_version 1.0" in metrics
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    verify = runner.invoke(cli, ["audit", "verify", "--root", str(installed_root)])
    assert verify.exit_code == 0 and "intact" in verify.output
    anchored = ["audit", "verify", "--root", str(installed_root), "--anchor", json.dumps(head)]
    verify = runner.invoke(cli, anchored)
    assert verify.exit_code == 0 and f"anchor entry {head['seq']} present" in verify.output
    backup = runner.invoke(
        cli, ["backup", str(tmp_path / "copy.db"), "--root", str(installed_root)]
    )
    assert backup.exit_code == 0 and (tmp_path / "copy.db").stat().st_size > 0
    status = runner.invoke(cli, ["status", "--root", str(installed_root)])
    assert status.exit_code == 0 and '"version": 1' in status.output


def _model_name(port: int, auth: dict[str, str]) -> str:
    r = httpx.get(f"http://127.0.0.1:{port}/v1/status", headers=auth)
    return str(r.json()["model"]["name"])
