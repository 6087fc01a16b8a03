"""The host: CPU, memory and this process through psutil; Intel RAPL energy counters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil


def host_stats() -> dict[str, Any]:
    """CPU percent (since the previous call), memory, and this process's resident memory."""
    mem = psutil.virtual_memory()
    proc = psutil.Process(os.getpid())
    return {
        "cpu": {"percent": psutil.cpu_percent(interval=None), "count": psutil.cpu_count()},
        "memory": {
            "total_bytes": mem.total,
            "available_bytes": mem.available,
            "percent": mem.percent,
        },
        "process": {"rss_bytes": proc.memory_info().rss, "threads": proc.num_threads()},
    }


def rapl_domains(root: Path) -> tuple[str, dict[str, tuple[Path, float]]]:
    """(status, {domain: (energy_uj file, wrap range in uJ)}) for top-level RAPL packages."""
    base = root / "sys/class/powercap"
    domains: dict[str, tuple[Path, float]] = {}
    denied = False
    for zone in sorted(base.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue  # sub-zones (core, uncore, dram) are inside their package's count
        energy = zone / "energy_uj"
        try:
            name = (zone / "name").read_text().strip()
            int(energy.read_text())
            span = float((zone / "max_energy_range_uj").read_text())
        except PermissionError:
            denied = True
            continue
        except (OSError, ValueError):
            continue
        domains[f"{name}:{zone.name}"] = (energy, span)
    if domains:
        return "rapl", domains
    if denied:
        return "unavailable: RAPL energy counters are not readable (root only here)", {}
    return "unavailable: no Intel RAPL counters", {}
