"""Telemetry against fixture sysfs trees (JetPack 5 hwmon, JetPack 4 iio, RAPL) and tegrastats."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from edge_agent.telemetry import (
    EnergyMeter,
    gpu_load,
    parse_tegrastats,
    power_rails,
    rapl_domains,
    snapshot,
    thermal_zones,
)

FIXTURES = Path(__file__).parent / "fixtures"
RAILS = {"GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"}


def test_jetpack5_hwmon_rails_and_gpu_load() -> None:
    root = FIXTURES / "jetpack5"
    source, rails = power_rails(root)
    assert source == "ina3221-hwmon"
    assert set(rails) == RAILS  # the tmp451 hwmon is not a power monitor
    assert rails["GPU"]["power_mw"] == pytest.approx(19072 * 312 / 1000)
    assert rails["SYS5V"] == {"voltage_mv": 4984, "current_ma": 600, "power_mw": 2990.4}
    assert gpu_load(root) == pytest.approx(42.1)
    assert thermal_zones(root) == {"CPU-therm": 38.5, "GPU-therm": 37.0, "AUX-therm": 36.5}


def test_jetpack4_iio_rails_and_devfreq_load() -> None:
    root = FIXTURES / "jetpack4"
    source, rails = power_rails(root)
    assert source == "ina3221-iio"
    assert set(rails) == RAILS
    assert rails["SOC"] == {"power_mw": 1084, "voltage_mv": 19136, "current_ma": 56}
    assert rails["SYS5V"] == {"power_mw": 1496}
    assert gpu_load(root) == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("name", "gpu_mw", "soc_avg", "load"),
    [("tegrastats_jetpack4.txt", 154, 1084, 12), ("tegrastats_jetpack5.txt", 5950, 13877, 42)],
)
def test_tegrastats_lines_with_and_without_mw(
    name: str, gpu_mw: float, soc_avg: float, load: float
) -> None:
    parsed = parse_tegrastats((FIXTURES / name).read_text())
    assert set(parsed["rails"]) == RAILS, parsed["rails"]  # RAM/SWAP "a/bMB" are not rails
    assert parsed["rails"]["GPU"]["power_mw"] == gpu_mw
    assert parsed["rails"]["SOC"]["average_mw"] == soc_avg
    assert parsed["gpu_load_percent"] == load
    assert parsed["temperatures_c"]["GPU"] in (36.5, 37.0)
    assert parsed["ram_total_mb"] > parsed["ram_used_mb"] > 0


def test_snapshot_on_a_plain_machine_says_unavailable(tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    assert snap["cpu"]["count"] >= 1
    assert snap["process"]["rss_bytes"] > 1 << 20
    assert snap["memory"]["total_bytes"] > snap["memory"]["available_bytes"] > 0
    assert snap["gpu"]["status"].startswith("unavailable")
    assert snap["power"]["source"].startswith("unavailable") and snap["power"]["rails"] == {}


def test_snapshot_on_jetson_trees_and_tegrastats_fallback(tmp_path: Path) -> None:
    snap = snapshot(FIXTURES / "jetpack5")
    assert snap["gpu"]["load_percent"] == pytest.approx(42.1)
    assert snap["power"]["total_mw"] == pytest.approx(
        sum(r["power_mw"] for r in snap["power"]["rails"].values())
    )
    line = (FIXTURES / "tegrastats_jetpack5.txt").read_text()
    snap = snapshot(tmp_path, tegrastats_line=line)
    assert snap["power"]["source"] == "tegrastats"
    assert snap["power"]["total_mw"] == 5950 + 4577 + 13877 + 0 + 1831 + 2990
    assert snap["gpu"]["load_percent"] == 42


def test_rapl_energy_counts_packages_once_and_handles_wrap(tmp_path: Path) -> None:
    root = tmp_path / "rapl"
    shutil.copytree(FIXTURES / "rapl", root)
    status, domains = rapl_domains(root)
    assert status == "rapl" and len(domains) == 2  # intel-rapl:0:0 (core) is inside package 0
    meter = EnergyMeter(root)
    assert meter.available and meter.source == "rapl"
    zone0 = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    zone1 = root / "sys/class/powercap/intel-rapl:1/energy_uj"
    zone0.write_text("1000000\n")  # wrapped: 262143328850 - 262143000000 + 1000000 uJ
    zone1.write_text("7000000\n")  # +2 J
    expected = (262143328850 - 262143000000 + 1_000_000) / 1e6 + 2.0
    assert meter.total_joules() == pytest.approx(expected)
    assert meter.joules_per_inference(10) == pytest.approx(expected / 10)
    zone1.write_text("8000000\n")
    assert meter.joules_per_inference(4) == pytest.approx(0.25)


def test_unreadable_rapl_is_reported_not_guessed(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of their mode")
    root = tmp_path / "rapl"
    shutil.copytree(FIXTURES / "rapl", root)
    for f in (root / "sys/class/powercap").glob("intel-rapl:*/energy_uj"):
        f.chmod(0)
    status, domains = rapl_domains(root)
    assert "not readable" in status and not domains


def test_jetson_power_is_integrated(tmp_path: Path) -> None:
    root = tmp_path / "jp4"
    shutil.copytree(FIXTURES / "jetpack4", root)
    meter = EnergyMeter(root)
    assert meter.source == "ina3221-iio"
    time.sleep(0.05)
    joules = meter.total_joules()
    watts = (154 + 462 + 1084 + 0 + 154 + 1496) / 1000
    assert joules is not None and watts * 0.04 < joules < watts * 1.0


def test_no_source_means_none(tmp_path: Path) -> None:
    meter = EnergyMeter(tmp_path)
    assert not meter.available and meter.source.startswith("unavailable")
    assert meter.total_joules() is None and meter.joules_per_inference(5) is None
