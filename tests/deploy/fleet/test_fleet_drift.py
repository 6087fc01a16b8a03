"""The fleet poll keeps each agent's status answer, its drift alerts with it, for the page."""

from __future__ import annotations

import asyncio
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
