"""Faults over real processes: a device sending NaN, one sending a scaled update, one killed.

One round with five SuperNodes: three honest devices, one whose ClientApp poisons its reply with
NaN and one that boosts its update x100 (the test-only Flower mod in ``fl_fault_mod.py``), and
one honest device killed while it trains. The server rejects the two poisoned updates with their
node ids, stops waiting for the dead one at the round timeout, and aggregates the two honest
updates that remain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flower_harness import Federation, NodeSpec

pytestmark = pytest.mark.slow


def test_poisoned_updates_rejected_and_dead_node_timed_out(
    fl_federation: tuple[Federation, dict[str, Path]],
    fl_config: Callable[..., dict[str, object]],
    tmp_path: Path,
) -> None:
    from server.federation.registry import Registry
    from server.federation.weights import load_weights

    fed, world = fl_federation
    # the poisoned devices reuse honest roots: only their replies differ
    fed.start_node(NodeSpec("nan", world["site-a"], fault="nan"))
    fed.start_node(NodeSpec("scale", world["site-b"], fault="scale"))
    ids = {name: fed.node_id(name) for name in ("site-a", "site-b", "site-d", "nan", "scale")}
    run_dir = tmp_path / "run"
    config = fl_config(
        run_dir, **{"codec": "int8-delta", "fraction-evaluate": 0.0, "min-evaluate-nodes": 0,
                    "min-available-nodes": 5, "round-timeout": 90.0}
    )  # fmt: skip
    popen = fed.submit(config)
    fed.wait_for_log("site-d", "Receiving: train message", timeout=120)
    fed.kill_node("site-d")  # mid-round: it has the instructions, its reply never comes
    outcome = fed.finish(popen, timeout=240)
    assert outcome.completed, f"{outcome.status}: {outcome.details}\n{fed.logs()}"

    registry = Registry(run_dir / "registry.db")
    (round1,) = [r for r in registry.rounds() if r.round == 1]
    assert round1.status == "done" and round1.accepted == 2, round1
    train = {p.node_id: p for rnd, p in registry.participants(1) if p.phase == "train"}
    by_name = {name: train[node] for name, node in ids.items()}
    assert by_name["site-a"].outcome == by_name["site-b"].outcome == "accepted"
    assert by_name["nan"].outcome == "rejected", by_name["nan"]
    assert by_name["scale"].outcome == "rejected", by_name["scale"]
    assert "norm" in by_name["scale"].reason, by_name["scale"].reason
    assert by_name["site-d"].outcome in ("timeout", "error"), by_name["site-d"]
    rejected = {p.node_id for _, p in registry.rejections()}
    assert rejected == {ids["nan"], ids["scale"]}
    assert str(ids["nan"]) in outcome.log and str(ids["scale"]) in outcome.log  # logged by node

    state = json.loads((run_dir / "state.json").read_text())
    assert state["round"] == 1
    merged, deployed = load_weights(run_dir / "global.json"), load_weights(Path(state["model"]))
    assert all(np.isfinite(v).all() for v in merged.values())
    assert any(not np.array_equal(merged[k], deployed[k]) for k in merged)  # it did aggregate
