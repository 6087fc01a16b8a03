"""The fleet poll keeps each agent's drift alerts in the inventory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from deploy.fleet import Device, Inventory, TransportSpec, poll
from deploy.fleet import polling as polling_module

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
    assert stored.drift is not None
    assert stored.drift["alerts"] == [ALERT] and stored.drift["images"] == 512
    assert stored.drift["reference"] == "validation: 300 images"
    assert "statistics" not in stored.drift


def test_agents_without_drift_keep_none() -> None:
    assert polling_module.drift_summary(None) is None
    old = polling_module.drift_summary({"reference": None, "note": "no reference", "alerts": []})
    assert old == {"alerts": [], "images": 0, "reference": None, "note": "no reference"}
