"""Device telemetry: host (psutil), Jetson GPU, temperatures and power rails, energy."""

from pathlib import Path
from typing import Any

from edge_agent.telemetry.energy import EnergyMeter
from edge_agent.telemetry.host import host_stats, rapl_domains
from edge_agent.telemetry.jetson import gpu_load, parse_tegrastats, power_rails, thermal_zones
from edge_agent.telemetry.tegrastats import TegrastatsReader

__all__ = [
    "EnergyMeter",
    "TegrastatsReader",
    "gpu_load",
    "host_stats",
    "parse_tegrastats",
    "power_rails",
    "rapl_domains",
    "snapshot",
    "thermal_zones",
]


def snapshot(root: Path = Path("/"), tegrastats_line: str | None = None) -> dict[str, Any]:
    """Everything measurable now; each missing source says "unavailable: why".

    ``root``: where ``sys/`` lives (tests point it at recorded trees); ``tegrastats_line``: the
    latest line of a running ``tegrastats`` (:meth:`TegrastatsReader.latest`), used where sysfs
    exposes no power rails.
    """
    root = Path(root)
    data = host_stats()
    load = gpu_load(root)
    data["gpu"] = (
        {"load_percent": load}
        if load is not None
        else {"status": "unavailable: no Jetson GPU load"}
    )
    data["temperatures_c"] = thermal_zones(root)
    source, rails = power_rails(root)
    if not rails and tegrastats_line:
        parsed = parse_tegrastats(tegrastats_line)
        source, rails = "tegrastats", parsed["rails"]
        if load is None and parsed["gpu_load_percent"] is not None:
            data["gpu"] = {"load_percent": parsed["gpu_load_percent"]}
        data["temperatures_c"] = data["temperatures_c"] or parsed["temperatures_c"]
    data["power"] = {"source": source, "rails": rails}
    if rails:
        data["power"]["total_mw"] = sum(r["power_mw"] for r in rails.values())
    return data
