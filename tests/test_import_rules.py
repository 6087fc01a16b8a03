"""The package boundaries of DESIGN.md, enforced."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ALLOWED = {
    "models": set(),
    "edge_agent": {"models"},
    "deploy": {"edge_agent", "models"},
    "server": {"models", "deploy", "edge_agent"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    ours = set(ALLOWED)
    for path in (ROOT / package).rglob("*.py"):
        bad = (_imports(path) & ours) - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_agent_and_data_side_import_no_torch() -> None:
    """The device side (and the data/task/metric modules it uses) must not pull in torch."""
    code = (
        "import sys, edge_agent.cli, models, models.datasets, models.metrics, models.preprocess,"
        " models.synth.generator; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
