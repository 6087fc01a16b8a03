"""Federated rounds over real processes: a SuperLink and three SuperNodes on 127.0.0.1.

Two FedProx rounds on three non-IID devices run to completion and promote the candidate into the
next signed bundle (the margin is wide open so the packaging path always runs); everything the
devices sent is inflated from the wire and holds nothing but the model's arrays and numeric
metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flower_harness import Federation

pytestmark = pytest.mark.slow

FLEET_PATHS = {
    "/v1/fleet/register-node", "/v1/fleet/activate-node", "/v1/fleet/deactivate-node",
    "/v1/fleet/unregister-node", "/v1/fleet/send-node-heartbeat", "/v1/fleet/pull-messages",
    "/v1/fleet/push-messages", "/v1/fleet/get-run", "/v1/fleet/get-fab",
    "/v1/fleet/push-object", "/v1/fleet/pull-object", "/v1/fleet/confirm-message-received",
}  # fmt: skip


def _state_dict_keys(checkpoint: Path) -> set[str]:
    from models.nets import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    return set(model.state_dict())


def assert_only_arrays_and_metrics(fed: Federation, checkpoint: Path) -> int:
    """Every message a device pushed holds the model's arrays and numbers (and a decline's
    reason or an evaluation's site name); returns how many."""
    from edge_agent.fl.protocol import ARRAYS, METRICS, S_REASON, S_SITE, SCALE_SUFFIX, STATUS

    assert fed.tap is not None
    assert fed.tap.paths() <= FLEET_PATHS, fed.tap.paths() - FLEET_PATHS
    names = _state_dict_keys(checkpoint)
    messages = fed.tap.sent_messages()
    assert messages, "the tap saw no message from the devices"
    for msg in messages:
        content = msg.content
        assert set(content.array_records) <= {ARRAYS}
        assert set(content.metric_records) == {METRICS}
        for name in content.array_records.get(ARRAYS, {}):
            assert name.removesuffix(SCALE_SUFFIX) in names, f"{name} is not a model parameter"
        for value in content.metric_records[METRICS].values():
            assert isinstance(value, int | float), value
        declined = content.metric_records[METRICS].get("declined", 0) == 1
        if content.config_records:  # a decline's reason, or an evaluation's site name: no more
            assert set(content.config_records) == {STATUS}
            if declined:
                assert set(content.config_records[STATUS]) == {S_REASON}
            else:
                assert set(content.config_records[STATUS]) == {S_SITE}
                assert not content.array_records  # evaluation replies carry no weights
    return len(messages)


def test_two_rounds_promote_or_keep_over_real_processes(
    fl_federation: tuple[Federation, dict[str, Path]],
    fl_config: Callable[..., dict[str, object]],
    tmp_path: Path,
) -> None:
    from deploy.bundle import verify
    from server.federation.registry import Registry

    fed, world = fl_federation
    run_dir = tmp_path / "run"
    config = fl_config(
        run_dir, **{"num-rounds": 2, "strategy": "fedprox", "codec": "fp16", "promote": True,
                    "distill-config": str(world["distill_config"]),
                    "signing-key": str(world["key"]), "heldout-limit": 64,
                    # the deployed export carries no manifest: the next version is given
                    "bundle-version": 2, "promotion-margin": 100.0}
    )  # fmt: skip
    outcome = fed.run(config, timeout=240)
    assert outcome.completed, f"{outcome.status}: {outcome.details}\n{fed.logs()}"

    registry = Registry(run_dir / "registry.db")
    rounds = {r.round: r for r in registry.rounds()}
    assert sorted(rounds) == [0, 1, 2], fed.logs()
    for rnd in (1, 2):
        assert rounds[rnd].status == "done", rounds[rnd]
        assert rounds[rnd].accepted == 3, rounds[rnd]
        assert rounds[rnd].train_metrics, rounds[rnd]
    train = [p for rnd, p in registry.participants() if p.phase == "train"]
    assert {p.outcome for p in train} == {"accepted"}
    assert len({p.node_id for p in train}) == 3

    decisions = registry.decisions()
    assert len(decisions) == 1 and decisions[0].reason
    decision = decisions[0]
    assert decision.promoted, f"{decision.reason}\n{fed.logs()}"
    assert decision.bundle and decision.version == 2
    bundle = Path(decision.bundle)
    assert bundle.is_file() and bundle.parent == run_dir / "bundles"
    summary = verify(bundle, world["key"].parent)
    assert summary.manifest.version == 2 and summary.verified_by

    sent = assert_only_arrays_and_metrics(fed, world["checkpoint"])
    # baseline evaluation + 2 x (train + evaluate), three devices each
    assert sent >= 3 * 5
