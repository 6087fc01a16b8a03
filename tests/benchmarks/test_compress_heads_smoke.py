"""The head-pruning / teacher-assistant / routing benchmark runs at smoke size and says so."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_compress_heads_quick(tmp_path: Path) -> None:
    env = {**os.environ, "FOVEA_BENCH_RESULTS": str(tmp_path)}
    args = ["benchmarks.compress_heads", "--quick", "--workdir", str(tmp_path / "w")]
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "compress_heads_quick.json").read_text())
    heads = result["heads"]
    assert sum(heads["prune"]["heads_after"]) == round(0.6 * sum(heads["prune"]["heads_before"]))
    assert heads["prune"]["parameters_after"] < heads["prune"]["parameters_before"]
    assert {"unpruned", "pruned"} == set(heads["latency"])
    chain = result["chain"]
    assert len(chain["chain"]["generations"]) == len(chain["assistants"]) + 1 >= 2
    assert {"averaged", "routed"} <= set(result["routing"])
    assert "routed - averaged" in (tmp_path / "compress_heads_quick.md").read_text()
