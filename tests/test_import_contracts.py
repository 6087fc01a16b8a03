"""The package boundaries of DESIGN.md: import-linter's contracts hold, and they catch a breach.

The contracts live in pyproject.toml (``[tool.importlinter]``) and run in ``make lint``; here
they run on this tree and on copies of it with one deliberately wrong import each.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("models", "edge_agent", "deploy", "server", "benchmarks", "tools")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_contracts_hold() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # past a front: server.distill reaching into server.training's data module
        ("server/distill/losses.py", "from server.training.data import load_splits",
         "Packages are used through their fronts"),
        # torch on the device's inference path
        ("edge_agent/screening/quality.py", "import torch",
         "The device's inference path imports no torch, Flower, server or deploy code"),
        # a lower layer importing a higher one
        ("models/task.py", "from deploy import LocalTransport",
         "Layers: benchmarks > server > deploy > edge_agent > models"),
    ],
)  # fmt: skip
def test_a_wrong_import_breaks_its_contract(
    tree_copy: Path, module: str, line: str, contract: str
) -> None:
    path = tree_copy / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # noqa\n")
    try:
        out = _lint(tree_copy)
    finally:
        path.write_text(original)
    assert out.returncode == 1, out.stdout[-2000:]
    assert f"{contract} BROKEN" in out.stdout, out.stdout[-3000:]


def test_agent_and_data_side_import_no_torch() -> None:
    """The device side (and the data/task/metric modules it uses) must not pull in torch."""
    code = (
        "import sys, edge_agent.cli, edge_agent.fl, models, models.datasets, models.metrics,"
        " models.preprocess, models.synth.generator; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
