"""Jetson sysfs and tegrastats: GPU load, thermal zones, INA3221 power rails (JetPack 4 and 5)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

GPU_LOAD_FILES = ("sys/devices/gpu.0/load", "sys/devices/platform/gpu.0/load")
GPU_DEVFREQ = re.compile(r"^[0-9a-f]+\.(gv11b|ga10b|gp10b|gm20b|gpu)$")
"""The integrated GPU's devfreq node: ``17000000.gv11b`` (Xavier), ``17000000.ga10b`` (Orin),
``17000000.gp10b`` (TX2), ``57000000.gpu`` (Nano, ``gm20b``). Other devfreq nodes (the EMC,
NVDLA, the video engines) also have a ``device/load`` that is not the GPU's."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _number(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def gpu_load(root: Path) -> float | None:
    """GPU load in percent (the driver reports per mille), or None where not exposed."""
    candidates = [root / f for f in GPU_LOAD_FILES]
    candidates += [
        node / "device/load"
        for node in sorted((root / "sys/class/devfreq").glob("*"))
        if GPU_DEVFREQ.match(node.name)
    ]
    for path in candidates:
        value = _number(path)
        if value is not None:
            return value / 10.0
    return None


def thermal_zones(root: Path) -> dict[str, float]:
    """Temperature in degrees Celsius per thermal zone type (sysfs reports millidegrees)."""
    temps: dict[str, float] = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        name, value = _read(zone / "type"), _number(zone / "temp")
        if name and value is not None:
            temps[name] = value / 1000.0
    return temps


def _hwmon_rails(root: Path) -> dict[str, dict[str, float]]:
    """JetPack 5: INA3221 hwmon ``in*_label``, ``in*_input`` (mV), ``curr*_input`` (mA)."""
    rails: dict[str, dict[str, float]] = {}
    for hwmon in sorted((root / "sys/class/hwmon").glob("hwmon*")):
        if _read(hwmon / "name") != "ina3221":
            continue
        for label in sorted(hwmon.glob("in*_label")):
            channel = label.name[2:].split("_")[0]
            name = _read(label)
            mv, ma = _number(hwmon / f"in{channel}_input"), _number(hwmon / f"curr{channel}_input")
            if name and mv is not None and ma is not None:
                rails[name] = {"voltage_mv": mv, "current_ma": ma, "power_mw": mv * ma / 1000.0}
    return rails


def _iio_rails(root: Path) -> dict[str, dict[str, float]]:
    """JetPack 4: INA3221x iio ``rail_name_N``, ``in_powerN_input`` (mW) and friends."""
    rails: dict[str, dict[str, float]] = {}
    for dev in sorted((root / "sys/bus/i2c/drivers/ina3221x").glob("*/iio:device*")):
        for label in sorted(dev.glob("rail_name_*")):
            n = label.name.rsplit("_", 1)[1]
            name, mw = _read(label), _number(dev / f"in_power{n}_input")
            if not name or mw is None:
                continue
            rail = {"power_mw": mw}
            for key, file in (("voltage_mv", "in_voltage"), ("current_ma", "in_current")):
                value = _number(dev / f"{file}{n}_input")
                if value is not None:
                    rail[key] = value
            rails[name] = rail
    return rails


def power_rails(root: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """(source, rails): INA3221 rails from hwmon (JetPack 5) or iio (JetPack 4), or none."""
    rails = _hwmon_rails(root)
    if rails:
        return "ina3221-hwmon", rails
    rails = _iio_rails(root)
    if rails:
        return "ina3221-iio", rails
    return "unavailable: no INA3221 power monitor exposed", {}


_STAMP = re.compile(r"^\s*\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2}\s+")
# RAIL now/avg (JetPack 4: plain numbers; JetPack 5 and 6: with mW; a third /max where printed)
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_TEMP = re.compile(r"(?<!\S)([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_GR3D = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_NO_SENSOR_C = -100.0  # tegrastats prints -256C for a sensor that is off (Orin's CV0..CV2)


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One ``tegrastats`` line (JetPack 4, 5 or 6): rails (now/avg mW, with or without the
    unit), GPU load and frequency, temperatures (sensors that are off left out), RAM."""
    line = _STAMP.sub("", line.strip())
    rails = {
        m[1]: {"power_mw": float(m[2]), "average_mw": float(m[3])} for m in _RAIL.finditer(line)
    }
    temps = {m[1]: float(m[2]) for m in _TEMP.finditer(line) if float(m[2]) > _NO_SENSOR_C}
    gr3d, ram = _GR3D.search(line), _RAM.search(line)
    return {
        "rails": rails,
        "temperatures_c": temps,
        "gpu_load_percent": float(gr3d[1]) if gr3d else None,
        "gpu_freq_mhz": float(gr3d[2]) if gr3d and gr3d[2] else None,
        "ram_used_mb": float(ram[1]) if ram else None,
        "ram_total_mb": float(ram[2]) if ram else None,
    }
