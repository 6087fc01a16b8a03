"""The demo's federation stage over real processes: a SuperLink and three ``fovea-agent node``
SuperNodes on 127.0.0.1 run two rounds on the devices' reviewed cases, then the candidate is
promoted to the next signed bundle or kept with a reason, and no process is left behind."""

import importlib.util
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from rich.console import Console

pytestmark = pytest.mark.slow

SITES = {"clinic-1": "site-a", "clinic-2": "site-b", "clinic-3": "site-d"}


def _need_flower() -> None:
    if importlib.util.find_spec("flwr") is None or not shutil.which(
        "flower-superlink", path=str(Path(sys.executable).parent)
    ):
        pytest.skip("the federation stage needs Flower (pip install -e '.[fl]')")


def _device(root: Path, bundle: Path, public_key: Path, site: str, seed: int) -> Path:
    """A device root serving ``bundle`` with 40 clinician-reviewed cases of ``site``."""
    from edge_agent.install import DeviceRoot, install
    from edge_agent.store import Store
    from models.synth import SITES as PROFILES
    from models.synth import generate

    device = DeviceRoot(root).ensure()
    shutil.copy(public_key, device.keys.trusted / public_key.name)
    install(device, bundle)
    data = generate(PROFILES[site], 60, size=32, seed=seed)
    with Store(device.state_db) as store:
        for i in np.flatnonzero(data.grade >= 0)[:40]:
            case = store.record_screening(
                user="technician", model_version=1, request={"site": site}, result={}
            )
            store.save_case_image(case, data.images[i])
            store.record_review(case, user="clinician", grade=int(data.grade[i]))
    return root


def _nodes_alive(roots: list[Path], grace_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + grace_s
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(str(r) in cmd for r in roots):
                found.append(cmd)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_federation_stage_runs_two_rounds_and_decides(tiny_export: Path, tmp_path: Path) -> None:
    _need_flower()
    from deploy.bundle import build_bundle, verify
    from deploy.keys import generate_keypair
    from server.demo.federation import ROUNDS, federation_stage
    from server.federation.registry import Registry

    workdir = tmp_path / "demo"
    private, public = generate_keypair(workdir / "keys", "demo")
    bundle = build_bundle(tiny_export, workdir / "bundles" / "model-v1.tar", 1, private)
    devices = {
        name: _device(workdir / "devices" / name, bundle, public, site, seed=20 + i)
        for i, (name, site) in enumerate(SITES.items())
    }
    console = Console(record=True, width=160)

    result = federation_stage(workdir, devices, tiny_export, bundle, private, console)

    registry = Registry(result.registry)
    rounds = {r.round: r for r in registry.rounds()}
    assert sorted(rounds) == list(range(ROUNDS + 1))
    for rnd in range(1, ROUNDS + 1):
        assert rounds[rnd].status == "done" and rounds[rnd].accepted == 3, rounds[rnd]
    assert result.reason
    # every device's evaluation named its site: the registry, decision and report use the names
    assert sorted(registry.meta()["sites"].values()) == sorted(devices)
    assert set(registry.decisions()[-1].per_site) == set(devices)
    text = console.export_text()
    assert "rounds" in text and "decision after round 2" in text
    # what the rounds bought at the clinic whose camera changed, with paired intervals
    adaptation = result.adaptation
    assert adaptation is not None and adaptation["clinic"] == "clinic-3"
    assert (workdir / "federation" / "adaptation.json").is_file()
    for m in adaptation["metrics"].values():
        lo, hi = m["interval"]
        assert m["difference"] == pytest.approx(m["candidate"] - m["deployed"], abs=1e-6)
        assert lo <= m["difference"] <= hi
    assert "clinic-3 (new camera): deployed -> candidate on 1,000 further images" in text
    if result.promoted:
        assert result.bundle is not None and result.bundle.parent == workdir / "bundles"
        assert result.version == 2
        assert verify(result.bundle, workdir / "keys").manifest.version == 2
        assert "promoted" in text
    else:
        assert result.bundle is None and result.version is None
        assert "kept" in result.reason or "not promoted" in result.reason
        assert "kept the deployed bundle" in text
    assert _nodes_alive(list(devices.values())) == []
