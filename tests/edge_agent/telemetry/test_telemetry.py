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


# Each fixture is one line in the format NVIDIA documents for tegrastats (Jetson Linux
# developer guide, "tegrastats Utility": RAM X/Y (lfb NxZ), SWAP, CPU [X%@Z,...], EMC_FREQ,
# GR3D_FREQ X%@Y or X%@[Y,...], NAME@TC, RAIL now/avg), as real devices print it:
# - JetPack 4 (r32), AGX Xavier: rails without a unit. Recorded line from DataDog/datadog-agent,
#   pkg/collector/corechecks/nvidia/jetson/jetson_test.go (agXSample); field formats:
#   https://docs.nvidia.com/jetson/archives/l4t-archived/l4t-325/Tegra%20Linux%20Driver%20Package%20Development%20Guide/AppendixTegraStats.html
# - JetPack 5 (r35), AGX Xavier: the same INA3221 rails (GPU, CPU, SOC at 0x40; CV, VDDRQ,
#   SYS5V at 0x41: https://docs.nvidia.com/jetson/archives/r35.2.1/DeveloperGuide/_sources/
#   text/SD/PlatformPowerAndPerformance/JetsonXavierNxSeriesAndJetsonAgxXavierSeries.rst.txt)
#   now with "mW"; from CPU on, a line recorded on an AGX Xavier (public Rust edge-status test,
#   found through the code search); RAM/SWAP written in the documented format.
# - JetPack 6 (r36), AGX Orin: GR3D_FREQ per GPC in brackets, engines "off", lower-case
#   sensors, VDD_GPU_SOC / VDD_CPU_CV / VIN_SYS_5V0. datadog-agent jetson_test.go (r36Sample).
TEGRASTATS = [
    ("tegrastats_jetpack4.txt", RAILS, ("GPU", 0, "SOC", 932), (0, 318), ("GPU", 37.5)),
    ("tegrastats_jetpack5.txt", RAILS, ("GPU", 467, "SOC", 1245), (0, 114), ("GPU", 35.0)),
    (
        "tegrastats_jetpack6_orin.txt",
        {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"},
        ("VDD_GPU_SOC", 3205, "VIN_SYS_5V0", 4767),
        (0, 305),
        ("gpu", 47.812),
    ),
]


@pytest.mark.parametrize(("name", "rails", "power", "gr3d", "temp"), TEGRASTATS)
def test_tegrastats_lines_of_each_jetpack(
    name: str,
    rails: set[str],
    power: tuple[str, float, str, float],
    gr3d: tuple[float, float],
    temp: tuple[str, float],
) -> None:
    parsed = parse_tegrastats((FIXTURES / name).read_text())
    assert set(parsed["rails"]) == rails, parsed["rails"]  # RAM/SWAP "a/bMB" are not rails
    assert parsed["rails"][power[0]]["power_mw"] == power[1]
    assert parsed["rails"][power[2]]["average_mw"] == power[3]
    assert (parsed["gpu_load_percent"], parsed["gpu_freq_mhz"]) == gr3d
    assert parsed["temperatures_c"][temp[0]] == temp[1]
    assert parsed["ram_total_mb"] > parsed["ram_used_mb"] > 0


def test_tegrastats_timestamp_off_sensors_and_max_column() -> None:
    # JetPack 6 prefixes a timestamp; Orin prints -256C for the CV sensors it does not read;
    # newer releases add a third (peak) value to each rail
    line = (
        "09-01-2025 10:55:25 RAM 1313/30697MB (lfb 37x4MB) GR3D_FREQ 7% CV0@-256C "
        "cpu@43.343C/43.4C tj@43.343C VDD_GPU_SOC 1995mW/1990mW/2100mW VDD_CPU_CV 0mW/0mW"
    )
    parsed = parse_tegrastats(line)
    assert parsed["rails"] == {
        "VDD_GPU_SOC": {"power_mw": 1995, "average_mw": 1990},
        "VDD_CPU_CV": {"power_mw": 0, "average_mw": 0},
    }
    assert parsed["temperatures_c"] == {"cpu": 43.343, "tj": 43.343}
    assert (parsed["gpu_load_percent"], parsed["gpu_freq_mhz"]) == (7, None)


def test_devfreq_fallback_reads_the_gpu_node_only(tmp_path: Path) -> None:
    # /sys/class/devfreq also lists the NVDLA, the video engines and the EMC; the GPU's node
    # is 17000000.gv11b (Xavier), 17000000.ga10b (Orin), 57000000.gpu (Nano)
    devfreq = tmp_path / "sys/class/devfreq"
    for name, load in (("15880000.nvdla0", "900"), ("15340000.vic", "700")):
        (devfreq / name / "device").mkdir(parents=True)
        (devfreq / name / "device/load").write_text(load)
    assert gpu_load(tmp_path) is None  # no GPU node: no guess from another engine
    for gpu, load in (("17000000.ga10b", "253"), ("57000000.gpu", "80")):
        root = tmp_path / gpu
        shutil.copytree(tmp_path / "sys", root / "sys")
        (root / "sys/class/devfreq" / gpu / "device").mkdir(parents=True)
        (root / "sys/class/devfreq" / gpu / "device/load").write_text(load)
        assert gpu_load(root) == pytest.approx(int(load) / 10)


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
    assert snap["power"]["total_mw"] == 467 + 467 + 1245 + 0 + 311 + 2768
    assert snap["gpu"]["load_percent"] == 0
    assert snap["temperatures_c"]["Tdiode"] == 38.75


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
