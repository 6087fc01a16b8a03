"""Differential privacy over real processes: a SuperLink and three SuperNodes on 127.0.0.1.

Two one-round runs on the same federation, with a clipping norm far below the size of a
round's honest update so that clipping must act:

- ``server-fixed`` without noise: the server clips every accepted update, so the new global
  weights move from the deployed ones by at most the clipping norm (the weighted mean of clipped
  updates cannot be longer than the bound), and by more than nothing;
- ``client-fixed`` (codec fp16) with noise: the devices clip through Flower's
  ``fixedclipping_mod`` and the server adds Gaussian noise of standard deviation
  ``noise * clip / sampled`` to every parameter, so the global update is far longer than the
  clipping norm and about as long as that noise.

Both rounds complete with every update accepted, the saved global weights are finite, and the
registry records the round and the DP settings it ran with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flower_harness import Federation

pytestmark = pytest.mark.slow

CLIP = 0.05


def _update_norm(run_dir: Path) -> tuple[float, int]:
    """(L2 norm of global - deployed over the trained arrays, how many trained values)."""
    from server.federation.weights import load_weights, split_trained

    state = json.loads((run_dir / "state.json").read_text())
    assert state["round"] == 1, state
    merged = load_weights(run_dir / "global.json")
    deployed = load_weights(Path(state["model"]))
    assert merged.keys() == deployed.keys()
    trained, kept = split_trained(merged)
    assert all(np.isfinite(v).all() for v in trained.values())
    for name, value in kept.items():  # integer buffers are the server's, never noised
        assert np.array_equal(value, deployed[name]), name
    delta = [
        np.asarray(v, np.float64) - np.asarray(deployed[k], np.float64) for k, v in trained.items()
    ]
    size = sum(d.size for d in delta)
    return float(np.sqrt(sum(float(np.sum(d * d)) for d in delta))), size


def _assert_round_recorded(run_dir: Path, dp: str, fed: Federation) -> None:
    from server.federation.registry import Registry

    registry = Registry(run_dir / "registry.db")
    rounds = {r.round: r for r in registry.rounds()}
    assert 1 in rounds, fed.logs()
    assert rounds[1].status == "done", f"{rounds[1]}\n{fed.logs()}"
    assert rounds[1].accepted == 3, rounds[1]
    train = [p for rnd, p in registry.participants(1) if p.phase == "train"]
    assert len(train) == 3 and {p.outcome for p in train} == {"accepted"}, train
    run_config = registry.meta()["run_config"]
    assert run_config["dp"] == dp, run_config
    assert float(run_config["dp-clipping-norm"]) == CLIP, run_config


def test_dp_server_and_client_fixed_clipping_over_real_processes(
    fl_federation: tuple[Federation, dict[str, Path]],
    fl_config: Callable[..., dict[str, object]],
    tmp_path: Path,
) -> None:
    fed, _ = fl_federation
    common = {"strategy": "fedavg", "fraction-evaluate": 0.0, "min-evaluate-nodes": 0,
              "min-train-nodes": 3, "dp-clipping-norm": CLIP, "lr": 0.05}  # fmt: skip

    server_dir = tmp_path / "server-fixed"
    config = fl_config(server_dir, **common, **{"dp": "server-fixed", "dp-noise-multiplier": 0.0})
    outcome = fed.run(config, name="server-fixed", timeout=150)
    assert outcome.completed, f"{outcome.status}: {outcome.details}\n{fed.logs()}"
    _assert_round_recorded(server_dir, "server-fixed", fed)
    norm, _ = _update_norm(server_dir)
    assert 0.0 < norm <= CLIP * (1 + 1e-3), f"server-clipped update has norm {norm}"

    client_dir = tmp_path / "client-fixed"
    noise = 1.0
    config = fl_config(
        client_dir,
        **common,
        **{"dp": "client-fixed", "dp-noise-multiplier": noise, "codec": "fp16"},
    )
    outcome = fed.run(config, name="client-fixed", timeout=150)
    assert outcome.completed, f"{outcome.status}: {outcome.details}\n{fed.logs()}"
    _assert_round_recorded(client_dir, "client-fixed", fed)
    assert "fixedclipping_mod: parameters are clipped" in fed.logs(), fed.logs()
    norm, size = _update_norm(client_dir)
    stdv = noise * CLIP / 3  # num_sampled_clients = min-train-nodes
    expected = stdv * np.sqrt(size)  # the norm of the noise alone; clipped updates add <= CLIP
    assert norm > CLIP, f"client-fixed update norm {norm}: no noise was added"
    assert abs(norm - expected) <= CLIP + 0.2 * expected, (norm, expected, size)
