"""The head-pruning / teacher-assistant / routing benchmark runs at smoke size and says so."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_compress_heads_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    args = ["benchmarks.compress_heads", "--quick", "--workdir", str(tmp_path / "w")]
    bench(args, tmp_path, timeout=600)
    result = json.loads((tmp_path / "compress_heads_quick.json").read_text())
    heads = result["heads"]
    assert sum(heads["prune"]["heads_after"]) == round(0.6 * sum(heads["prune"]["heads_before"]))
    assert heads["prune"]["parameters_after"] < heads["prune"]["parameters_before"]
    assert {"unpruned", "pruned"} == set(heads["latency"])
    chain = result["chain"]
    assert len(chain["chain"]["generations"]) == len(chain["assistants"]) + 1 >= 2
    assert {"averaged", "routed"} <= set(result["routing"])
    assert "routed - averaged" in (tmp_path / "compress_heads_quick.md").read_text()
