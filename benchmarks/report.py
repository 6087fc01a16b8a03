"""Writing benchmark results: JSON for machines, a Markdown table for people."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("FOVEA_BENCH_RESULTS", Path(__file__).parent / "results"))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, GPU (None without one), date."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write(name: str, payload: dict[str, Any], table: list[list[str]]) -> Path:
    """Save ``payload`` as results/<name>.json and the table as results/<name>.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    path = RESULTS / f"{name}.json"
    # results are committed: name this checkout's files relative to it, not by a machine's path
    text = json.dumps(payload, indent=2).replace(json.dumps(str(Path.cwd()) + "/")[1:-1], "")
    path.write_text(text)
    head, *rows = table
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"\nwrote {path} and {path.with_suffix('.md')}")
    return path
