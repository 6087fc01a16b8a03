"""The demo's edge stage: sign the exported student, install it on a local device root, serve it
with ``fovea-agent`` and screen a few synthetic patients over HTTP, as a clinic would."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from edge_agent.bundle import build_bundle, collect_files, generate_keypair
from edge_agent.install import DeviceRoot, active_manifest
from models.synth import SITES, generate
from models.task import GRADE_NAMES

SCREEN_SITE = "site-e"
"""The site whose patients the demo screens: one no model was trained on."""
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class AgentDemo:
    """What the edge stage made and where it lives."""

    bundle: Path
    root: Path
    tokens: Path
    screened: int
    log: Path


def agent_stage(workdir: Path, export_dir: Path, console: Console) -> AgentDemo:
    """Bundle + sign, install (when the export changed), serve, screen, review, stop."""
    device = DeviceRoot(workdir / "device").ensure()
    public = _keys(workdir / "keys", device)
    bundle = _install_current(export_dir, workdir / "bundles", workdir / "keys", device, console)
    tokens = _tokens(workdir / "device-tokens.json", device.path, console)
    log = workdir / "agent.log"
    with _serving(device.path, log, console) as url:
        screened = _screen_patients(url, tokens, console)
    console.print(f"signed by {public.name}; agent log: {log}")
    return AgentDemo(bundle, device.path, workdir / "device-tokens.json", screened, log)


def _agent_command() -> list[str]:
    script = Path(sys.executable).with_name("fovea-agent")
    if script.is_file():
        return [str(script)]
    found = shutil.which("fovea-agent")
    if found is None:
        raise RuntimeError("fovea-agent is not installed: run `make install` (pip install -e .)")
    return [found]


def _run_agent(*args: str) -> str:
    out = subprocess.run([*_agent_command(), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"fovea-agent {' '.join(args)} failed:\n{out.stderr or out.stdout}")
    return out.stdout


def _keys(keys: Path, device: DeviceRoot) -> Path:
    """The demo's signing key (made once) and the device's trust in its public half."""
    private, public = keys / "demo.key", keys / "demo.pub"
    if not private.is_file():
        private, public = generate_keypair(keys, "demo")
    trusted = device.path / "keys" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(public, trusted / public.name)
    return public


def _install_current(
    export_dir: Path, bundles: Path, keys: Path, device: DeviceRoot, console: Console
) -> Path:
    """Install the export unless the device already runs exactly these files."""
    installed = active_manifest(device)
    if installed is not None and installed.files == collect_files(export_dir):
        path = bundles / f"{installed.name}-v{installed.version}.tar"
        console.print(f"device already runs {installed.name} v{installed.version}; reusing")
        return path
    version = installed.version + 1 if installed is not None else 1
    bundles.mkdir(parents=True, exist_ok=True)
    name = json.loads((export_dir / "export.json").read_text())["model"]["name"]
    path = build_bundle(export_dir, bundles / f"{name}-v{version}.tar", version, keys / "demo.key")
    console.print(f"signed bundle: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    console.print(_run_agent("install", str(path), "--root", str(device.path)).rstrip())
    return path


def _tokens(path: Path, root: Path, console: Console) -> dict[str, str]:
    """A technician and a clinician account (tokens kept 0600 beside the device root)."""
    if path.is_file():
        return dict(json.loads(path.read_text()))
    tokens = {
        role: _run_agent("users", "add", f"demo-{role}", "--role", role, "--root", str(root))
        .strip()
        .splitlines()[-1]
        for role in ("technician", "clinician")
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(tokens, indent=1))
    console.print(f"accounts demo-technician and demo-clinician; tokens in {path}")
    return tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(root: Path, log: Path, console: Console) -> Iterator[str]:
    """``fovea-agent serve`` on a free loopback port until the block ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*_agent_command(), "serve", "--root", str(root), "--host", "127.0.0.1"]
    with log.open("ab") as sink:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=sink, stderr=sink)
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < READY_TIMEOUT_S:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            raise RuntimeError(f"the agent was not ready after {READY_TIMEOUT_S:.0f}s; see {log}")
        console.print(f"agent ready at {url} in {time.perf_counter() - t0:.1f}s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _post(url: str, token: str, body: bytes, content_type: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=body, headers={"Authorization": f"Bearer {token}", "Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url}: {exc.code} {exc.read().decode(errors='replace')}") from None


def _multipart(files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for field, data in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{field}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def _patients(n: int) -> list[tuple[dict[str, np.ndarray], dict[str, int]]]:
    """``n`` two-eye patients of the unseen site, chosen to show every kind of answer."""
    data = generate(SITES[SCREEN_SITE], 400, size=256, seed=7)
    pairs: dict[str, list[int]] = {}
    for i, patient in enumerate(data.patient):
        pairs.setdefault(str(patient), []).append(i)
    both = [idx for idx in pairs.values() if len(idx) == 2]

    def kind(idx: list[int]) -> int:  # severe, healthy, mild or moderate, one eye ungradable
        g = data.grade[idx]
        return 3 if g.min() < 0 else 0 if g.max() >= 3 else 1 if g.max() == 0 else 2

    chosen = [next(idx for idx in both if kind(idx) == k) for k in range(4)]
    return [
        (
            {"left": data.images[a], "right": data.images[b]},
            {"left": int(data.grade[a]), "right": int(data.grade[b])},
        )
        for a, b in chosen[:n]
    ]


def _truth(grade: int) -> str:
    return "ungradable" if grade < 0 else GRADE_NAMES[grade]


def _screen_patients(url: str, tokens: dict[str, str], console: Console, n: int = 4) -> int:
    """Screen ``n`` patients (both eyes), show the answers; a clinician reviews every eye."""
    table = Table(title=f"screening {n} patients of {SCREEN_SITE} over HTTP (POST /v1/screen)")
    for col in ("patient", "eye", "true grade", "answer", "P(referable)", "patient decision"):
        table.add_column(col)
    truths: list[tuple[str, int]] = []
    for p, (images, truth) in enumerate(_patients(n)):
        body, ctype = _multipart({eye: _jpeg(img) for eye, img in images.items()})
        answer = _post(f"{url}/v1/screen", tokens["technician"], body, ctype)
        for e in answer["eyes"]:
            truths.append((e["case_id"], truth[e["eye"]]))
            if e["quality"]["gradable"]:
                said = f"grade {e['grade']} ({GRADE_NAMES[e['grade']]})"
                p_ref = f"{e['referable_probability']:.2f}"
            else:
                said, p_ref = "retake: " + e["quality"]["reasons"][0].split(";")[0][:50], "-"
            table.add_row(
                str(p + 1), e["eye"], _truth(truth[e["eye"]]), said, p_ref,
                answer["patient"]["recommendation"] if e["eye"] == "left" else "",
            )  # fmt: skip
    console.print(table)
    for case_id, grade in truths:  # the clinician's verdicts: the synthetic labels
        verdict = {"grade": grade, "gradable": True} if grade >= 0 else {"gradable": False}
        body = json.dumps({**verdict, "comment": "demo: simulated clinician"}).encode()
        _post(f"{url}/v1/cases/{case_id}/review", tokens["clinician"], body, "application/json")
    console.print(f"a clinician reviewed {len(truths)} cases (POST /v1/cases/ID/review)")
    return n
