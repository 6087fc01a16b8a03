"""The fleet poll keeps each agent's status answer, its drift alerts with it, for the page."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.fleet import Device, Inventory, TransportSpec, poll, snapshots
from deploy.fleet import polling as polling_module
from deploy.fleet.overview import drift_alerts

ALERT = {
    "name": "brightness_down",
    "statistic": "brightness",
    "direction": "down",
    "raised_at": "2026-12-06T09:00:00Z",
    "images": 140,
    "value": 0.31,
    "reference": 0.45,
    "cusum": 9.1,
    "threshold": 8.9,
}


def test_poll_stores_the_drift_alerts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def status(url: str, token: str) -> dict[str, Any]:
        drift = {
            "reference": {"source": "validation: 300 images", "images": 300},
            "images": 512,
            "alerts": [ALERT],
            "statistics": {"brightness": {"cusum_up": 0.0}},
            "note": "x",
        }
        return {"model": {"name": "m", "version": 2, "ready": True}, "drift": drift}

    monkeypatch.setattr(polling_module.probe, "status", status)
    monkeypatch.setattr(polling_module, "head_of", lambda body: None)
    inv = Inventory(tmp_path / "fleet.db")
    spec = TransportSpec(kind="local", root=str(tmp_path / "dev"), restart=("true",))
    inv.add(Device(host="clinic-1", url="http://127.0.0.1:9", token="t", transport=spec))
    asyncio.run(poll(inv, conn=None))
    [stored] = inv.devices()
    assert stored.model_version == 2 and stored.status == "ready"
    kept = snapshots(inv.path)["clinic-1"].body
    assert kept["drift"]["alerts"] == [ALERT] and kept["drift"]["images"] == 512
    assert drift_alerts(kept) and "brightness" in drift_alerts(kept)[0]  # what the page shows


def _dim_fundus_png(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    from models.synth.generator import generate
    from models.synth.profiles import get_site

    image = generate(get_site("site-a"), 1, size=96, seed=seed).images[0]
    buf = io.BytesIO()
    Image.fromarray((image * 0.55).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_real_agents_drift_alert_reaches_the_fleet(make_fleet: Any) -> None:
    """A real agent serving a bundle with its reference, a darker camera, one poll: the stored
    status answer holds the alert the fleet page shows."""
    import httpx

    fleet = make_fleet(["dev-a"])
    [device] = fleet.inventory.devices()
    tech = fleet.add_user("dev-a", "tech", "technician")
    with httpx.Client(base_url=device.url, timeout=30) as client:
        deadline = time.monotonic() + 120
        while client.get("/v2/health/ready").status_code != 200:  # loading, calibrating
            assert time.monotonic() < deadline, fleet.log("dev-a")[-2000:]
            time.sleep(0.2)
        for seed in range(60):
            files = {"image": ("eye.png", _dim_fundus_png(seed), "image/png")}
            r = client.post("/v1/screen", files=files, headers={"Authorization": f"Bearer {tech}"})
            assert r.status_code == 200, r.text
        metrics = client.get("/metrics").text
    assert "fovea_drift_alert{" in metrics
    asyncio.run(poll(fleet.inventory, conn=None))
    kept = snapshots(fleet.inventory.path)["dev-a"].body
    assert kept["drift"]["reference"]["source"].startswith("validation: ")
    assert kept["drift"]["images"] == 60
    assert drift_alerts(kept), kept["drift"]
