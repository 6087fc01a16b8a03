"""Drift monitoring through the agent's app: screenings feed it, the alert shows in /v1/status
and /metrics, an admin resets it, it survives a restart, and a bundle without a reference
says so."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from conftest import SIZE, FakePredictor, fundus_png
from fastapi.testclient import TestClient

from edge_agent.drift import NO_REFERENCE, REFERENCE_FILE, DriftReference, DriftSettings, Moments
from edge_agent.service import AgentConfig, ScreeningSettings, create_app
from edge_agent.service.drift import DriftWatch
from edge_agent.store import Store
from models.preprocess import PreprocessSpec

# far brighter than the synthetic photographs: their brightness is drift
REFERENCE = DriftReference(
    source="test validation",
    images=200,
    brightness=Moments(mean=0.9, std=0.02, n=200),
    sharpness=Moments(mean=-1.0, std=0.5, n=200),
    retake_rate=0.1,
)
SETTINGS = DriftSettings(streams=300)


def _app(root: Path, slot: Path, bundle: str = "bundle-1") -> tuple[TestClient, dict[str, str]]:
    store = Store(root / "state.db")
    tokens = {r: store.add_user(f"{r}-{secrets.token_hex(4)}", r) for r in ("technician", "admin")}
    app = create_app(
        FakePredictor(),
        store,
        store,
        ScreeningSettings(spec=PreprocessSpec(size=SIZE), referral_threshold=0.3),
        AgentConfig(max_request_bytes=4 << 20, max_image_bytes=2 << 20),
        drift=DriftWatch.for_slot(slot, root, bundle, SETTINGS),
    )
    return TestClient(app, raise_server_exceptions=False), tokens


def _auth(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


@pytest.fixture
def slot(tmp_path: Path) -> Path:
    """An installed slot carrying the reference."""
    path = tmp_path / "slot"
    path.mkdir()
    (path / REFERENCE_FILE).write_text(REFERENCE.model_dump_json())
    return path


def _screen(client: TestClient, tokens: dict[str, str], n: int) -> None:
    for i in range(n):
        files = {"image": ("eye.png", fundus_png(seed=i), "image/png")}
        r = client.post("/v1/screen", files=files, headers=_auth(tokens, "technician"))
        assert r.status_code == 200, r.text


def test_an_alert_shows_is_reset_by_an_admin_and_survives_a_restart(
    tmp_path: Path, slot: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    client, tokens = _app(root, slot)
    with client:
        _screen(client, tokens, 30)
        drift = client.get("/v1/status", headers=_auth(tokens, "technician")).json()["drift"]
        assert drift["images"] == 30 and drift["reference"]["source"] == "test validation"
        alert = next(a for a in drift["alerts"] if a["name"] == "brightness_down")
        assert alert["statistic"] == "brightness" and alert["value"] < alert["reference"] == 0.9
        assert 10 <= alert["images"] <= 30 and alert["cusum"] >= alert["threshold"]
        metrics = client.get("/metrics").text
        assert 'fovea_drift_alert{direction="down",statistic="brightness"} 1.0' in metrics
        assert "fovea_drift_images 30.0" in metrics

    restarted, tokens = _app(root, slot)  # the same device root and bundle
    with restarted:
        drift = restarted.get("/v1/status", headers=_auth(tokens, "admin")).json()["drift"]
        assert "brightness_down" in [a["name"] for a in drift["alerts"]]
        refused = restarted.post("/v1/drift/reset", headers=_auth(tokens, "technician"))
        assert refused.status_code == 403
        assert restarted.post("/v1/drift/reset").status_code == 401
        r = restarted.post("/v1/drift/reset", headers=_auth(tokens, "admin"))
        assert r.status_code == 200, r.text
        assert r.json()["alerts"] == [] and r.json()["last_reset"]["by"].startswith("admin")
        metrics = restarted.get("/metrics").text
        assert "fovea_drift_alert{" not in metrics and "fovea_drift_images 0.0" in metrics

    # a new bundle in the same root starts afresh
    other, tokens = _app(root, slot, bundle="bundle-2")
    with other:
        drift = other.get("/v1/status", headers=_auth(tokens, "admin")).json()["drift"]
        assert drift["images"] == 0 and drift["last_reset"] is None


def test_a_bundle_without_a_reference_says_so(tmp_path: Path) -> None:
    root, empty = tmp_path / "root", tmp_path / "old-slot"
    root.mkdir()
    empty.mkdir()
    client, tokens = _app(root, empty)
    with client:
        _screen(client, tokens, 2)
        drift = client.get("/v1/status", headers=_auth(tokens, "admin")).json()["drift"]
        assert drift == {"reference": None, "note": NO_REFERENCE, "images": 0, "alerts": []}
        r = client.post("/v1/drift/reset", headers=_auth(tokens, "admin"))
        assert r.status_code == 409 and NO_REFERENCE in r.json()["error"]
        assert "fovea_drift_reference 0.0" in client.get("/metrics").text


def _install(export_dir: Path, work: Path, drop_reference: bool = False) -> Path:
    """A device root with ``export_dir`` installed (its reference left out if asked)."""
    import shutil

    from typer.testing import CliRunner

    from deploy.bundle import build_bundle
    from deploy.keys import generate_keypair
    from edge_agent.cli import app as cli
    from edge_agent.install import DeviceRoot

    source = work / "export"
    shutil.copytree(export_dir, source)
    if drop_reference:
        (source / REFERENCE_FILE).unlink()
    private, public = generate_keypair(work / "keys", "publisher")
    root = DeviceRoot(work / "root").ensure()
    root.keys.trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(public, root.keys.trusted / "publisher.pub")
    bundle = build_bundle(source, work / "b1.tar", 1, private)
    result = CliRunner().invoke(cli, ["install", str(bundle), "--root", str(root.path)])
    assert result.exit_code == 0, result.output
    return root.path


def _loaded(root: Path) -> tuple[TestClient, dict[str, str]]:
    from edge_agent.service.server import load_agent

    agent = load_agent(root, AgentConfig(max_batch=4, max_wait_ms=1.0, threads=1))
    store = agent.store
    tokens = {r: store.add_user(f"{r}-{secrets.token_hex(4)}", r) for r in ("technician", "admin")}
    return TestClient(agent.app, raise_server_exceptions=False), tokens


def test_a_real_installed_bundle_carries_its_reference(tiny_export: Path, tmp_path: Path) -> None:
    root = _install(tiny_export, tmp_path)
    client, tokens = _loaded(root)
    with client:
        _screen(client, tokens, 12)
        drift = client.get("/v1/status", headers=_auth(tokens, "admin")).json()["drift"]
        assert drift["reference"]["source"].startswith("validation: ")
        assert drift["images"] == 12 and "brightness" in drift["statistics"]
    assert (root / "drift.json").is_file()  # written at shutdown
    again, tokens = _loaded(root)
    with again:
        drift = again.get("/v1/status", headers=_auth(tokens, "admin")).json()["drift"]
        assert drift["images"] == 12


def test_an_older_bundle_without_a_reference(tiny_export: Path, tmp_path: Path) -> None:
    client, tokens = _loaded(_install(tiny_export, tmp_path, drop_reference=True))
    with client:
        drift = client.get("/v1/status", headers=_auth(tokens, "admin")).json()["drift"]
        assert drift["reference"] is None and drift["note"] == NO_REFERENCE
