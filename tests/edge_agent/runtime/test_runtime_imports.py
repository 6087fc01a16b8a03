"""The inference path (runtime, telemetry) imports neither torch nor tensorrt at import time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_runtime_and_telemetry_import_no_torch() -> None:
    code = (
        "import sys, edge_agent.runtime, edge_agent.telemetry;"
        " print(sorted(m for m in ('torch', 'tensorrt', 'server') if m in sys.modules))"
    )
    root = Path(__file__).parents[3]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
