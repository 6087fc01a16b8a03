"""The report's fleet table shows each device's drift at its last poll."""

from __future__ import annotations

from pathlib import Path

from deploy.fleet import Device, Inventory, TransportSpec
from server.report.operations import fleet_section
from server.report.sources import Workdir


def _device(host: str, root: Path, drift: dict[str, object] | None) -> Device:
    spec = TransportSpec(kind="ssh", root=str(root / host), restart=("true",))
    return Device(host=host, url="http://127.0.0.1:9", token="t", transport=spec, drift=drift)


def test_fleet_table_names_drift_alerts(tmp_path: Path) -> None:
    inventory = Inventory(tmp_path / "fleet.db")
    alert = {"statistic": "brightness", "direction": "down"}
    inventory.add(
        _device("a", tmp_path, {"alerts": [alert], "images": 90, "reference": "validation"})
    )
    inventory.add(_device("b", tmp_path, {"alerts": [], "images": 512, "reference": "v"}))
    inventory.add(
        _device("c", tmp_path, {"alerts": [], "reference": None, "note": "no reference here"})
    )
    inventory.add(_device("d", tmp_path, None))
    body = fleet_section(Workdir(tmp_path)).body
    assert "<th>drift</th>" in body
    assert "1 alert: brightness down" in body
    assert "no alert (512 images)" in body and "no reference here" in body
