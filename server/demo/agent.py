"""The demo's edge stage: sign the exported student, flash it onto three local devices the way
``fovea flash`` does (no SSH), show the fleet, and let each device screen its own site's patients
over HTTP while a clinician reviews them, as clinics would."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import socket
import subprocess
import sys
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

from deploy import LocalTransport
from deploy.bundle import build_bundle, collect_files
from deploy.flash import (
    FlashPlan,
    FlashTarget,
    HostResult,
    ProcessSupervisor,
    ServiceSpec,
    bundle_manifest,
    flash,
    summary_table,
)
from deploy.fleet import (
    BundleChange,
    Device,
    Inventory,
    RolloutPlan,
    TransportSpec,
    poll,
    rollout,
)
from deploy.keys import generate_keypair
from models import GRADE_NAMES, REFERABLE_MIN_GRADE
from models.synth import SITES, SiteProfile, generate
from server.console import print_devices, print_rollout

DEVICE_SITES = {"clinic-1": "site-a", "clinic-2": "site-b", "clinic-3": "site-d"}
"""The demo's devices and the hospital each one serves; site-e, which no device has, is the
server's held-out site for the promotion decision."""
SHIFTED_CLINIC = "clinic-3"
SHIFTED_CAMERA = dataclasses.replace(
    SITES["site-d"],
    name="site-d-new-camera",
    colour=(0.58, 0.32, 0.20),
    vignetting=0.60,
    blur=1.6,
)
"""site-d replaced its camera: darker, with a darker rim and softer optics than any site the
models were trained on, so small lesions fade (the demo student's referable sensitivity there
falls from 88% to 68%). Its device screens more patients, so federated rounds have something
to adapt to (``server.demo.adaptation`` measures what they bought there)."""
SHIFTED_PATIENTS = 120


def camera_of(host: str) -> SiteProfile:
    """How the camera at ``host``'s clinic renders a fundus."""
    return SHIFTED_CAMERA if host == SHIFTED_CLINIC else SITES[DEVICE_SITES[host]]


PATIENTS_PER_DEVICE = 30
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class AgentDemo:
    """What the edge stage made and where it lives."""

    bundle: Path
    devices: dict[str, Path]
    fleet_db: Path
    tokens: Path
    screened: int


def agent_stage(
    workdir: Path,
    export_dir: Path,
    console: Console,
    *,
    patients: int = PATIENTS_PER_DEVICE,
    shifted_patients: int = SHIFTED_PATIENTS,
) -> AgentDemo:
    """Sign the export, flash it onto three local devices, fleet table, each device screens
    ``patients`` (the clinic with the new camera ``shifted_patients``)."""
    bundle = _bundle(export_dir, workdir / "bundles", workdir / "keys" / "demo.key", console)
    layout = _Layout(workdir)
    with _running_fleet(workdir, bundle, console) as (targets, inventory):
        print_devices(inventory.devices(), console)
        tokens = _tokens(layout, console)
        size = bundle_manifest(bundle).preprocess.size
        screened = 0
        for target in targets:
            url = inventory.get(target.host).url
            camera = camera_of(target.host)
            n = shifted_patients if target.host == SHIFTED_CLINIC else patients
            screened += _screen_patients(url, tokens[target.host], camera, size, console, n)
    devices = {t.host: Path(t.root) for t in targets}
    return AgentDemo(bundle, devices, layout.fleet_db, layout.tokens, screened)


def rollout_stage(workdir: Path, deployed: Path, candidate: Path, console: Console) -> str:
    """Roll ``candidate`` (the promoted bundle) out to the demo's fleet: one canary, a short
    soak on health and error metrics, then the rest; returns the rollout's status."""
    with _running_fleet(workdir, deployed, console) as (_, inventory):

        def log(host: str, text: str) -> None:
            console.log(f"[bold]{host}[/bold] {text}")

        plan = RolloutPlan(canary=1, soak_s=5.0, check_interval_s=1.0, ready_timeout_s=60.0)
        result = asyncio.run(rollout(inventory, BundleChange(candidate), plan, on=log))
        print_rollout(result, console)
        asyncio.run(poll(inventory))
        print_devices(inventory.devices(), console)
    return result.status


@contextmanager
def _running_fleet(
    workdir: Path, bundle: Path, console: Console
) -> Iterator[tuple[list[FlashTarget], Inventory]]:
    """The demo's devices flashed with ``bundle`` (idempotent), registered in the fleet and
    polled, agents running until the block ends (the demo leaves no agent behind)."""
    public = _keys(workdir / "keys")
    layout = _Layout(workdir)
    targets = [
        FlashTarget(LocalTransport(name), str(layout.root(name)), str(layout.prefix(name)), port)
        for name, port in layout.ports().items()
    ]
    inventory = Inventory(layout.fleet_db)
    known = {d.host for d in inventory.devices()}
    plan = FlashPlan(
        bundle=bundle, trusted_key=public, agent_venv=sys.prefix, supervisor="process",
        listen_host="127.0.0.1", ready_timeout=READY_TIMEOUT_S,
        rotate_token=not known >= set(DEVICE_SITES),
    )  # fmt: skip
    console.print(f"flashing {len(targets)} local devices (no SSH: LocalTransport) ...")
    results = flash(targets, plan, console=console)
    console.print(summary_table(results))
    try:
        failed = [f"{r.host}: {r.error}" for r in results if not r.ok]
        if failed:
            raise RuntimeError("flashing failed on " + "; ".join(failed))
        for target, result in zip(targets, results, strict=True):
            _register(inventory, target, result)
        asyncio.run(poll(inventory))
        yield targets, inventory
    finally:
        for target in targets:
            asyncio.run(ProcessSupervisor(target.transport, _service(target)).stop())


class _Layout:
    """Where the demo's devices live: ``devices/<name>/{root,opt}``, ports kept between runs."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "devices"
        self.fleet_db = workdir / "fleet.db"
        self.tokens = self.dir / "tokens.json"

    def root(self, name: str) -> Path:
        return self.dir / name / "root"

    def prefix(self, name: str) -> Path:
        return self.dir / name / "opt"

    def ports(self) -> dict[str, int]:
        path = self.dir / "ports.json"
        ports: dict[str, int] = json.loads(path.read_text()) if path.is_file() else {}
        for name in DEVICE_SITES:
            ports.setdefault(name, _free_port())
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ports, indent=1))
        return ports


def _service(target: FlashTarget) -> ServiceSpec:
    return ServiceSpec("fovea-agent", ("true",), target.root, target.prefix)


def _register(inventory: Inventory, target: FlashTarget, result: HostResult) -> None:
    """Add a freshly flashed device to the fleet (a known one keeps its fleet token)."""
    assert result.url is not None
    known = {d.host: d for d in inventory.devices()}
    token = result.token or (known[target.host].token if target.host in known else None)
    if token is None:
        raise RuntimeError(f"{target.host}: no fleet token; delete {inventory.path} and rerun")
    spec = TransportSpec(
        kind="local", root=target.root, agent=f"{sys.prefix}/bin/fovea-agent",
        restart=("sh", "-c", f"kill -HUP $(cat {_service(target).pidfile})"),
    )  # fmt: skip
    device = Device(
        host=target.host, url=result.url, token=token, site=DEVICE_SITES[target.host],
        hardware="local device root", transport=spec,
    )  # fmt: skip
    inventory.add(device, replace=True)


def _run_agent(*args: str) -> str:
    agent = Path(sys.prefix) / "bin" / "fovea-agent"
    out = subprocess.run([str(agent), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"fovea-agent {' '.join(args)} failed:\n{out.stderr or out.stdout}")
    return out.stdout


def _keys(keys: Path) -> Path:
    """The demo's signing key pair (made once); returns the public half."""
    private, public = keys / "demo.key", keys / "demo.pub"
    if not private.is_file():
        private, public = generate_keypair(keys, "demo")
    return public


def _bundle(export_dir: Path, bundles: Path, key: Path, console: Console) -> Path:
    """The newest bundle if it holds exactly this export's files, else the next version."""
    _keys(key.parent)
    wanted = collect_files(export_dir)
    built = sorted(bundles.glob("*-v*.tar"), key=lambda b: bundle_manifest(b).version)
    if built:
        last = bundle_manifest(built[-1])
        if last.files == wanted:
            console.print(f"reusing {built[-1]} (v{last.version}: the export has not changed)")
            return built[-1]
    version = bundle_manifest(built[-1]).version + 1 if built else 1
    name = json.loads((export_dir / "export.json").read_text())["model"]["name"]
    bundles.mkdir(parents=True, exist_ok=True)
    path = build_bundle(export_dir, bundles / f"{name}-v{version}.tar", version, key)
    console.print(f"signed bundle: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def _tokens(layout: _Layout, console: Console) -> dict[str, dict[str, str]]:
    """A technician and a clinician account per device (tokens kept 0600)."""
    if layout.tokens.is_file():
        return dict(json.loads(layout.tokens.read_text()))
    tokens = {
        name: {
            role: _run_agent(
                "users", "add", f"demo-{role}", "--role", role, "--root", str(layout.root(name))
            )
            .strip()
            .splitlines()[-1]
            for role in ("technician", "clinician")
        }
        for name in DEVICE_SITES
    }
    layout.tokens.touch(mode=0o600)
    layout.tokens.write_text(json.dumps(tokens, indent=1))
    console.print(f"accounts demo-technician and demo-clinician on each device: {layout.tokens}")
    return tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _patients(
    site: SiteProfile, n: int, size: int
) -> list[tuple[dict[str, np.ndarray], dict[str, int]]]:
    """``n`` two-eye patients of ``site``: the first four show every kind of answer.

    They are rendered at ``size``, the model's input, like the synthetic training data: the
    generator draws finer detail at larger sizes, and 256 px renders downscaled to 64 cost the
    demo student about 8 points of accuracy, a gap a few dozen reviewed cases cannot close.
    """
    data = generate(site, 4 * n + 200, size=size, seed=7)
    pairs: dict[str, list[int]] = {}
    for i, patient in enumerate(data.patient):
        pairs.setdefault(str(patient), []).append(i)
    both = [idx for idx in pairs.values() if len(idx) == 2]

    def kind(idx: list[int]) -> int:  # severe, healthy, mild or moderate, one eye ungradable
        g = data.grade[idx]
        return 3 if g.min() < 0 else 0 if g.max() >= 3 else 1 if g.max() == 0 else 2

    shown = [next(idx for idx in both if kind(idx) == k) for k in range(4)]
    chosen = shown + [idx for idx in both if idx not in shown][: n - len(shown)]
    return [
        (
            {"left": data.images[a], "right": data.images[b]},
            {"left": int(data.grade[a]), "right": int(data.grade[b])},
        )
        for a, b in chosen
    ]


def _truth(grade: int) -> str:
    return "ungradable" if grade < 0 else GRADE_NAMES[grade]


def _answer(eye: dict[str, Any]) -> str:
    if eye["quality"]["gradable"]:
        return f"grade {eye['grade']} (P(referable) {eye['referable_probability']:.2f})"
    return "retake: " + eye["quality"]["reasons"][0].split(";")[0][:40]


def _screen_patients(
    url: str,
    tokens: dict[str, str],
    site: SiteProfile,
    size: int,
    console: Console,
    n: int = PATIENTS_PER_DEVICE,
) -> int:
    """Screen ``n`` two-eye patients of ``site`` over HTTP; a clinician reviews every eye."""
    table = Table(title=f"{url}: patients of {site.name} (POST /v1/screen), first four of {n}")
    for col in ("patient", "left: truth / answer", "right: truth / answer", "decision"):
        table.add_column(col)
    decisions: dict[str, int] = {}
    truths: list[tuple[str, int]] = []
    found = referable = 0
    for p, (images, truth) in enumerate(_patients(site, n, size)):
        body, ctype = _multipart({eye: _jpeg(img) for eye, img in images.items()})
        answer = _post(f"{url}/v1/screen", tokens["technician"], body, ctype)
        eyes = {e["eye"]: e for e in answer["eyes"]}
        decision = answer["patient"]["recommendation"]
        decisions[decision] = decisions.get(decision, 0) + 1
        for side, e in eyes.items():
            truths.append((e["case_id"], truth[side]))
            if truth[side] >= REFERABLE_MIN_GRADE:
                referable += 1
                found += bool(e["referable"])
        if p < 4:
            cells = [f"{_truth(truth[s])} / {_answer(eyes[s])}" for s in ("left", "right")]
            table.add_row(str(p + 1), *cells, decision)
    console.print(table)
    for case_id, grade in truths:  # the clinician's verdicts: the synthetic labels
        verdict = {"grade": grade, "gradable": True} if grade >= 0 else {"gradable": False}
        body = json.dumps({**verdict, "comment": "demo: simulated clinician"}).encode()
        _post(f"{url}/v1/cases/{case_id}/review", tokens["clinician"], body, "application/json")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))
    console.print(
        f"{site.name}: {n} patients ({counts}); referable eyes flagged {found} of {referable}; "
        f"{len(truths)} clinician reviews recorded"
    )
    return n
