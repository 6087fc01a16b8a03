"""Energy per inference in the agent's telemetry (/v1/status, /metrics), from RAPL counters."""

import shutil
from pathlib import Path

import pytest

from edge_agent.service.server import _Telemetry

FIXTURES = Path(__file__).parents[1] / "telemetry" / "fixtures"


def test_energy_per_inference_over_the_images_inferred_since_the_last_reading(
    tmp_path: Path,
) -> None:
    root = tmp_path / "rapl"
    shutil.copytree(FIXTURES / "rapl", root)
    telemetry = _Telemetry(root)
    package = root / "sys/class/powercap/intel-rapl:1/energy_uj"
    start = int(package.read_text())

    package.write_text(f"{start + 3_000_000}\n")  # 3 J while 100 images ran
    telemetry.rows += 100
    energy = telemetry.read()["energy"]
    assert energy["source"] == "rapl" and energy["inferences"] == 100
    assert energy["joules_per_inference"] == pytest.approx(0.03)

    package.write_text(f"{start + 4_000_000}\n")  # 1 J more for the next 50
    telemetry.rows += 50
    assert telemetry.read()["energy"]["joules_per_inference"] == pytest.approx(0.02)


def test_energy_says_unavailable_where_nothing_measures_it(tmp_path: Path) -> None:
    energy = _Telemetry(tmp_path).read()["energy"]
    assert energy["source"].startswith("unavailable")
    assert "joules_per_inference" not in energy


def test_inference_marks_the_device_busy_for_federated_training(tmp_path: Path) -> None:
    from edge_agent.fl.priority import BUSY_FILE, BusyFile
    from edge_agent.install import DeviceRoot
    from edge_agent.service.server import _BusyMark

    root = DeviceRoot(tmp_path)
    assert root.busy_file == tmp_path / BUSY_FILE, "agent and trainer must agree on the file"
    trainer_view = BusyFile.for_root(tmp_path)
    assert not trainer_view.is_busy()
    _BusyMark(root.busy_file).touch()
    assert trainer_view.is_busy()
