"""A server restarted between rounds resumes from its last checkpointed round.

Round 1 of a two-round run completes and is checkpointed; then the SuperLink (and the ServerApp
it runs) is killed. A new SuperLink on the same state and a new ``flwr run`` on the same run
directory carry on with round 2 only; the SuperNodes never restart.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flower_harness import Federation

pytestmark = pytest.mark.slow


def _wait_round(run_dir: Path, round_: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    path = run_dir / "state.json"
    while time.monotonic() < deadline:
        if path.is_file() and json.loads(path.read_text())["round"] >= round_:
            return
        time.sleep(0.2)
    raise AssertionError(f"round {round_} not checkpointed in {timeout:g} s")


def test_restarted_server_resumes_after_last_round(
    fl_federation: tuple[Federation, dict[str, Path]],
    fl_config: Callable[..., dict[str, object]],
    tmp_path: Path,
) -> None:
    from server.federation.registry import Registry

    fed, _ = fl_federation
    run_dir = tmp_path / "run"
    config = fl_config(
        run_dir, **{"num-rounds": 2, "fraction-evaluate": 0.0, "min-evaluate-nodes": 0}
    )
    first = fed.submit(config, name="first")
    _wait_round(run_dir, 1, timeout=240)
    fed.stop_superlink(signal.SIGKILL)  # the server machine loses power after round 1
    fed.finish(first, name="first", timeout=30)
    rounds_before = {r.round: r for r in Registry(run_dir / "registry.db").rounds()}
    assert rounds_before[1].status == "done"

    fed.start_superlink()
    outcome = fed.run(config, name="second", timeout=240)
    assert outcome.completed, f"{outcome.status}: {outcome.details}\n{fed.logs()}"
    assert "resuming" in outcome.log and "after round 1" in outcome.log, outcome.log[-3000:]
    assert "round 1/2" not in outcome.log  # round 1 is not trained again

    rounds = {r.round: r for r in Registry(run_dir / "registry.db").rounds()}
    assert rounds[1].started == rounds_before[1].started  # the same record, kept
    assert rounds[2].status == "done" and rounds[2].accepted == 3, rounds[2]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["round"] == 2 and [h["round"] for h in state["history"]] == [1, 2]
