"""The agent's serving path (service, runtime, screening, store, CLI) imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]


def test_serving_path_imports_no_torch() -> None:
    code = (
        "import sys, edge_agent.cli, edge_agent.service, edge_agent.service.server, "
        "edge_agent.service.served, edge_agent.runtime, edge_agent.telemetry; "
        "from edge_agent.cli import app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'server', 'deploy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
