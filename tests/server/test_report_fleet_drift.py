"""The report's fleet table shows each device's drift from its last stored status answer."""

from __future__ import annotations

from pathlib import Path

from deploy.fleet import Device, Inventory, TransportSpec, record_status
from server.report.operations import fleet_section
from server.report.sources import Workdir


def test_fleet_table_names_drift_alerts(tmp_path: Path) -> None:
    inventory = Inventory(tmp_path / "fleet.db")
    alert = {"statistic": "brightness", "direction": "down"}
    drift: dict[str, dict[str, object]] = {
        "a": {"alerts": [alert], "images": 90, "reference": {"source": "validation"}},
        "b": {"alerts": [], "images": 512, "reference": {"source": "validation"}},
        "c": {"alerts": [], "images": 0, "reference": None, "note": "no reference here"},
    }
    for host in ("a", "b", "c", "d"):
        spec = TransportSpec(kind="ssh", root=str(tmp_path / host), restart=("true",))
        inventory.add(Device(host=host, url="http://127.0.0.1:9", token="t", transport=spec))
        body = {"model": {"name": "m"}, **({"drift": drift[host]} if host in drift else {})}
        record_status(inventory.path, host, body)
    page = fleet_section(Workdir(tmp_path)).body
    assert "<th>drift</th>" in page
    assert "1 alert: brightness down" in page
    assert "no alert (512 images)" in page and "no reference here" in page
