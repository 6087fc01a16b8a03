"""Flashing a Jetson: the service user in ``video`` measures precision at install, the TensorRT
worker gets its own venv of JetPack's Python (checked to import tensorrt) and the agent config
names it. A fake ``/etc/nv_tegra_release`` (``FlashPlan.tegra_release``) makes this machine a
Jetson; a tiny ``tensorrt`` wheel stands in for JetPack's apt package."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_flash_ssh import _ssh_target

from deploy.flash import FlashTarget, bundle_manifest, flash, plan_lines
from deploy.flash.steps import _READY_SCRIPT, HostFlash
from deploy.flash.supervisor import ensure_service_user
from deploy.flash.worker import WORKER_STAMP, config_with_worker, l4t_release
from deploy.transport import LocalTransport, RunResult

# first line of /etc/nv_tegra_release on JetPack 5.1.1 (L4T R35.3.1), as `head -n 1` prints it
R35 = "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19 15:19:21 UTC 2023\n"  # noqa: E501


def fake_wheel(folder: Path, name: str = "tensorrt", version: str = "8.5.2.2") -> Path:
    """A pure-Python wheel whose module only has ``__version__`` (pip installs it offline)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: fovea-test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture
def jetson(tmp_path: Path) -> dict[str, Path]:
    """A fake tegra release file, a wheelhouse with 'tensorrt', and requirements naming it."""
    release = tmp_path / "nv_tegra_release"
    release.write_text(R35)
    wheelhouse = tmp_path / "wheelhouse"
    fake_wheel(wheelhouse)
    requirements = tmp_path / "worker-requirements.txt"
    requirements.write_text("tensorrt==8.5.2.2\n")
    return {"release": release, "wheelhouse": wheelhouse, "requirements": requirements}


class Recorder:
    """A Transport that answers like a systemd Jetson and records every command."""

    host = "xavier"

    def __init__(self, jetson: bool = True) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.jetson = jetson
        self.stopped = False  # the process keeper's state

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        argv = tuple(argv)
        self.calls.append(argv)
        text, rc = "", 0
        joined = " ".join(argv)
        if "uname -m" in joined:
            text = f"aarch64\n{'jetson' if self.jetson else 'generic'}\n3 11\n{R35}"
        elif "useradd" in joined:
            text = "video\nrender\n"
        elif argv[:2] in (("kill", "-TERM"), ("kill", "-0")):
            self.stopped |= argv[1] == "-TERM"
            rc = 1 if self.stopped else 0
        elif "setsid" in joined:
            self.stopped = False
        elif argv[0] == "test" and "worker-venv" in argv[-1]:
            rc = 1  # no worker venv yet
        elif argv[0] == "cat" and argv[-1].endswith(".pid"):
            text = "4242\n"  # the process keeper runs
        elif argv[0] == "cat":
            rc = 1  # no such file yet
        elif "status" in argv:
            text = json.dumps({"installed": None})
        elif "users" in argv:
            text = "account fleet created; token:\nTOKEN123\n"
        elif "tensorrt" in joined:
            text = "8.5.2.2 3.8.10\n"
        elif "version" in argv:
            text = "fovea-agent 1.2.3\n"
        return RunResult(self.host, argv, rc, text, "")

    async def put(self, local: Path, remote: str) -> None:
        self.calls.append(("put", str(local), remote))

    async def close(self) -> None:
        pass

    def index(self, predicate: Callable[[tuple[str, ...]], bool]) -> int:
        return next(i for i, c in enumerate(self.calls) if predicate(c))


def test_systemd_jetson_user_in_video_and_install_runs_as_it(
    make_plan: Callable[..., Any], jetson: dict[str, Path]
) -> None:
    plan = make_plan(
        supervisor="auto", worker_requirements=jetson["requirements"],
        wheelhouse=jetson["wheelhouse"],
    )  # fmt: skip
    tr = Recorder()
    target = FlashTarget(tr, "/var/lib/fovea", "/opt/fovea", 8000)
    result = asyncio.run(HostFlash(target, plan, bundle_manifest(plan.bundle)).run())
    assert result.ok, result.error
    steps = {s.name: s.detail for s in result.steps}
    assert steps["user"] == "fovea in video, render"
    assert "R35" in steps["probe"] and "TensorRT 8.5.2.2" in steps["worker"]
    # the service user exists, joins video (an existing one amended with usermod -aG) ...
    adds = tr.index(lambda c: "useradd --system" in " ".join(c))
    script = tr.calls[adds][-1]
    assert "for g in video render" in script and 'usermod -aG "$g" fovea' in script
    chown = tr.index(lambda c: c[:2] == ("chown", "-R"))
    # ... before the agent measures precision at install, as that user
    runuser = ("runuser", "-u", "fovea", "--")
    install = tr.index(lambda c: "install" in c and c[-2:] == ("--root", "/var/lib/fovea"))
    assert adds < chown < install
    assert tr.calls[install][:4] == runuser
    assert tr.calls[install][4:6] == (f"{sys.prefix}/bin/fovea-agent", "install")
    for word in ("status", "users"):
        assert next(c for c in tr.calls if word in c)[:4] == runuser
    # the agent config names the worker venv's Python, written before the install
    config = tr.index(lambda c: c[0] == "put" and c[2].endswith("/agent.yaml"))
    assert config < install
    worker = tr.index(lambda c: "--system-site-packages" in c)
    assert tr.calls[worker] == (
        "/usr/bin/python3", "-m", "venv", "--system-site-packages", "/opt/fovea/worker-venv",
    )  # fmt: skip


def test_generic_device_has_no_worker_and_no_service_user(make_plan: Callable[..., Any]) -> None:
    plan = make_plan(supervisor="process")
    tr = Recorder(jetson=False)
    target = FlashTarget(tr, "/var/lib/fovea", "/opt/fovea", 8000)
    result = asyncio.run(HostFlash(target, plan, bundle_manifest(plan.bundle)).run())
    assert result.ok, result.error
    steps = {s.name: s.detail for s in result.steps}
    assert steps["worker"] == "in-process (not a Jetson)"
    assert not any("runuser" in c or "useradd" in " ".join(c) for c in tr.calls)
    assert not any(c[0] == "put" and c[2].endswith("agent.yaml") for c in tr.calls)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd"
)
def test_existing_service_user_is_added_to_video(tmp_path: Path) -> None:
    user = f"fovea-t{os.getpid() % 100000}"
    tr = LocalTransport("here")
    subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
    try:
        assert "video" not in subprocess.run(["id", "-nG", user], capture_output=True,
                                             text=True).stdout  # fmt: skip
        groups = asyncio.run(ensure_service_user(tr, user, str(tmp_path)))
        expected = [g for g in ("video", "render") if _group_exists(g)]
        assert groups == expected and "video" in groups
        # what the agent's install runs under: the user's groups, video included
        out = subprocess.run(["runuser", "-u", user, "--", "id", "-nG"], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        assert set(expected) <= set(out)
        assert asyncio.run(ensure_service_user(tr, user, str(tmp_path))) == expected
    finally:
        subprocess.run(["userdel", user], check=False)
    try:  # a user that does not exist yet is created in the groups
        assert asyncio.run(ensure_service_user(tr, user, str(tmp_path))) == expected
        home = subprocess.run(["getent", "passwd", user], capture_output=True, text=True)
        assert f":{tmp_path}:" in home.stdout
    finally:
        subprocess.run(["userdel", user], check=False)


def _group_exists(name: str) -> bool:
    return subprocess.run(["getent", "group", name], capture_output=True).returncode == 0


def test_worker_venv_and_config_over_ssh(
    sshd: Any, tmp_path: Path, make_plan: Callable[..., Any], jetson: dict[str, Path]
) -> None:
    plan = make_plan(
        tegra_release=str(jetson["release"]), system_python=sys.executable,
        worker_requirements=jetson["requirements"], wheelhouse=jetson["wheelhouse"],
    )  # fmt: skip
    target = _ssh_target(sshd, tmp_path, "xavier")
    host = HostFlash(target, plan, bundle_manifest(plan.bundle))

    async def steps() -> list[tuple[bool, str]]:
        try:
            done = [await host._probe(), await host._copy(), await host._worker()]
            done += [await host._config(), await host._worker()]
        finally:
            await target.transport.close()
        return done

    probe, _, worker, config, again = asyncio.run(steps())
    assert probe[1].endswith("jetson R35")
    venv = Path(target.prefix) / "worker-venv"
    assert worker == (True, f"{venv} (Python {sys.version.split()[0]}, TensorRT 8.5.2.2)")
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert (venv / WORKER_STAMP).is_file()
    assert again[0] is False  # same requirements: pip not run again
    settings = yaml.safe_load(Path(target.root, "agent.yaml").read_text())
    assert settings == {"worker_python": f"{venv}/bin/python"} and config[0]
    assert any("worker-venv" in line for line in plan_lines(plan, [target]))


def test_worker_without_tensorrt_says_what_to_install(
    tmp_path: Path, make_plan: Callable[..., Any], jetson: dict[str, Path]
) -> None:
    empty = tmp_path / "no-trt.txt"
    empty.write_text("# nothing: JetPack's python3-libnvinfer is missing\n")
    plan = make_plan(
        tegra_release=str(jetson["release"]), system_python=sys.executable,
        worker_requirements=empty, wheelhouse=jetson["wheelhouse"],
    )  # fmt: skip
    target = FlashTarget(LocalTransport("nx"), str(tmp_path / "r"), str(tmp_path / "o"), 8000)
    [result] = flash([target], plan)
    assert result.status == "failed" and "[step worker]" in (result.error or "")
    assert "`import tensorrt` fails under" in (result.error or "")
    assert "python3-libnvinfer" in (result.error or "")
    unknown = make_plan(worker="yes")  # asked for, but no L4T release to choose pins by
    target = FlashTarget(LocalTransport("nx2"), str(tmp_path / "r2"), str(tmp_path / "o2"), 8000)
    [result] = flash([target], unknown)
    assert "no worker requirements for L4T release (unknown)" in (result.error or "")
    missing = make_plan(
        worker="yes", system_python=str(tmp_path / "no-python"), worker_requirements=empty
    )
    target = FlashTarget(LocalTransport("nx3"), str(tmp_path / "r3"), str(tmp_path / "o3"), 8000)
    [result] = flash([target], missing)
    assert "no-python (JetPack's Python" in (result.error or "")


def test_agent_config_keeps_other_settings() -> None:
    assert config_with_worker(None, None, "a.yaml") is None  # nothing to write off a Jetson
    text = config_with_worker("precision: fp16\n", "/w/bin/python", "a.yaml")
    assert yaml.safe_load(text or "") == {"precision": "fp16", "worker_python": "/w/bin/python"}
    assert config_with_worker(text, "/w/bin/python", "a.yaml") is None
    assert yaml.safe_load(config_with_worker(text, None, "a.yaml") or "") == {"precision": "fp16"}
    with pytest.raises(ValueError, match="not a mapping"):
        config_with_worker("- a\n", "/w/bin/python", "a.yaml")
    assert l4t_release(R35) == "R35" and l4t_release("garbage") is None


def test_ready_step_waits_while_the_agent_says_starting(tmp_path: Path) -> None:
    started = time.monotonic()
    until = {"ready_at": started + 1.5}

    class Agent(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = time.monotonic() >= until["ready_at"]
            body = {"ready": True} if ready else {
                "ready": False, "state": "starting", "progress": "fp16 engine 1/2"
            }  # fmt: skip
            data = json.dumps(body).encode()
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/health/ready"
    try:
        check = [sys.executable, "-c", _READY_SCRIPT, url]
        done = subprocess.run([*check, "0.5", "30"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and time.monotonic() - started >= 1.4  # past the 0.5 s
        until["ready_at"] = time.monotonic() + 60  # engines that never finish
        done = subprocess.run([*check, "0.3", "1"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and done.stdout.strip() == "starting: fp16 engine 1/2"
    finally:
        server.shutdown()
        server.server_close()
