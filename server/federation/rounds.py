"""One federated round over a Flower Grid: sample, send, wait, screen, aggregate, evaluate.

Mirrors ``Strategy.start`` round by round, with what the issue adds between its steps: a
waiting policy for nodes, validation of every update before the strategy sees it (so that DP
clipping and robust rules work on decoded, well-formed updates), partial progress after a
timeout, and a record of every participant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from edge_agent.fl import ARRAYS, METRICS, STATUS
from server.federation.registry import Participant
from server.federation.replies import Reply, read_reply, to_record, to_weights, unify_metrics
from server.federation.settings import FederationSettings
from server.federation.validation import decode_update, screen_updates
from server.federation.weights import Weights, split_trained

__all__ = ["NodesUnavailable", "PhaseResult", "evaluate_phase", "train_phase", "wait_for_nodes"]

Log = Callable[[str], None]


class NodesUnavailable(RuntimeError):
    """Too few nodes connected within the wait; the run stops with its checkpoint intact."""


@dataclass(frozen=True)
class PhaseResult:
    """What a train or evaluate phase produced (``weights`` None: global weights unchanged)."""

    status: str
    note: str
    sampled: int
    replied: int
    accepted: int
    participants: list[Participant]
    metrics: dict[str, float]
    weights: Weights | None = None
    sites: dict[int, str] = field(default_factory=dict)
    """Node id -> the site name its evaluation reply gave."""


def wait_for_nodes(
    grid: Grid, minimum: int, timeout: float, log: Log, poll: float = 1.0
) -> list[int]:
    """Connected node ids once at least ``minimum`` are connected; raises after ``timeout`` s.

    Flower's own sampling waits forever; this bounds the wait.
    """
    deadline = time.monotonic() + timeout
    said = -1
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() >= deadline:
            raise NodesUnavailable(
                f"only {len(nodes)} of the {minimum} nodes needed connected within {timeout:g} s"
            )
        if len(nodes) != said:
            log(f"waiting for nodes: {len(nodes)} connected, {minimum} needed")
            said = len(nodes)
        time.sleep(poll)


def _missing(sent: Sequence[Message], replies: Sequence[Reply], phase: str) -> list[Participant]:
    answered = {r.node_id for r in replies}
    return [
        Participant(int(m.metadata.dst_node_id), phase, "timeout", "no reply within round-timeout")
        for m in sent
        if int(m.metadata.dst_node_id) not in answered
    ]


def _declines(replies: Sequence[Reply], phase: str, log: Log) -> list[Participant]:
    out = []
    for r in replies:
        if r.kind in ("declined", "error", "invalid"):
            outcome = {"declined": "declined", "error": "error", "invalid": "rejected"}[r.kind]
            log(f"{phase}: node {r.node_id} {outcome}: {r.reason}")
            out.append(Participant(r.node_id, phase, outcome, r.reason, r.metrics))
    return out


def _restore_kept(aggregate: Weights, reference: Weights) -> Weights:
    """The aggregate in the reference's order and dtypes, integer arrays from the reference."""
    _, kept = split_trained(reference)
    return {
        k: kept[k].copy() if k in kept else np.asarray(aggregate[k]).astype(ref.dtype)
        for k, ref in reference.items()
    }


def train_phase(
    grid: Grid,
    strategy: Strategy,
    server_round: int,
    weights: Weights,
    settings: FederationSettings,
    log: Log,
) -> PhaseResult:
    """Train round ``server_round`` from ``weights``; aggregate if enough updates pass."""
    wait_for_nodes(grid, settings.min_available_nodes, settings.node_wait_timeout, log)
    config = ConfigRecord(settings.round_config(server_round).to_config())  # type: ignore[arg-type]
    messages = list(strategy.configure_train(server_round, to_record(weights), config, grid))
    replies_msgs = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    by_node = {int(m.metadata.src_node_id): m for m in replies_msgs}
    replies = [read_reply(m, train=True) for m in replies_msgs]
    participants = _missing(messages, replies, "train") + _declines(replies, "train", log)
    updates = [r for r in replies if r.kind == "update"]
    candidates = [
        decode_update(r.node_id, r.payload, r.num_examples, weights, settings.codec)
        for r in updates
    ]
    verdicts = screen_updates(candidates, weights, settings.max_update_norm_ratio)
    keys = unify_metrics(r.metrics for r, v in zip(updates, verdicts, strict=True) if v.accepted)
    accepted: list[Message] = []
    for reply, cand, verdict in zip(updates, candidates, verdicts, strict=True):
        metrics = dict(reply.metrics) | {"update-norm": verdict.norm}
        if not verdict.accepted:
            log(f"train: rejected the update of node {reply.node_id}: {verdict.reason}")
            participants.append(
                Participant(reply.node_id, "train", "rejected", verdict.reason, metrics)
            )
            continue
        assert cand.weights is not None
        msg = by_node[reply.node_id]
        msg.content = RecordDict(
            {
                ARRAYS: to_record(_restore_kept(cand.weights, weights)),
                METRICS: MetricRecord({k: reply.metrics[k] for k in sorted(keys)}),
            }
        )
        accepted.append(msg)
        participants.append(Participant(reply.node_id, "train", "accepted", "", metrics))
    counts = (len(messages), len(replies_msgs), len(accepted))
    if len(accepted) < settings.min_train_nodes:
        note = f"{len(accepted)} valid updates, {settings.min_train_nodes} needed: weights kept"
        log(f"round {server_round}: {note}")
        return PhaseResult("insufficient", note, *counts, participants, {})
    try:
        arrays, agg_metrics = strategy.aggregate_train(server_round, accepted)
    except Exception as e:  # Flower's aggregation errors: record the round, keep the weights
        note = f"aggregation failed: {type(e).__name__}: {e}"
        return PhaseResult("failed", note, *counts, participants, {})
    if arrays is None:
        return PhaseResult("failed", "the strategy returned no weights", *counts, participants, {})
    new = _restore_kept(to_weights(arrays), weights)
    if not all(np.isfinite(v).all() for v in split_trained(new)[0].values()):
        return PhaseResult(
            "failed", "aggregate is not finite: weights kept", *counts, participants, {}
        )
    metrics = {k: float(v) for k, v in (agg_metrics or {}).items() if isinstance(v, int | float)}
    return PhaseResult("done", "", *counts, participants, metrics, new)


def evaluate_phase(
    grid: Grid,
    strategy: Strategy,
    server_round: int,
    weights: Weights,
    settings: FederationSettings,
    log: Log,
) -> PhaseResult:
    """Federated evaluation of ``weights`` on each site's held-out share (metrics only)."""
    if settings.fraction_evaluate == 0:
        return PhaseResult("skipped", "fraction-evaluate is 0", 0, 0, 0, [], {})
    wait_for_nodes(grid, settings.min_available_nodes, settings.node_wait_timeout, log)
    config = ConfigRecord(settings.round_config(server_round).to_config())  # type: ignore[arg-type]
    messages = list(strategy.configure_evaluate(server_round, to_record(weights), config, grid))
    replies_msgs = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    by_node = {int(m.metadata.src_node_id): m for m in replies_msgs}
    replies = [read_reply(m, train=False) for m in replies_msgs]
    sites = {r.node_id: r.site for r in replies if r.site}
    participants = _missing(messages, replies, "evaluate") + _declines(replies, "evaluate", log)
    good = [r for r in replies if r.kind == "metrics" and r.num_examples > 0]
    keys = unify_metrics(r.metrics for r in good)
    for r in good:
        content = by_node[r.node_id].content
        content[METRICS] = MetricRecord({k: r.metrics[k] for k in sorted(keys)})
        if STATUS in content:
            del content[STATUS]  # the strategy aggregates metrics only
        participants.append(Participant(r.node_id, "evaluate", "accepted", "", r.metrics))
    counts = (len(messages), len(replies_msgs), len(good))
    if not good or len(good) < settings.min_evaluate_nodes:
        note = f"{len(good)} evaluations"
        return PhaseResult("insufficient", note, *counts, participants, {}, sites=sites)
    try:
        agg = strategy.aggregate_evaluate(server_round, [by_node[r.node_id] for r in good])
    except Exception as e:
        note = f"{type(e).__name__}: {e}"
        return PhaseResult("failed", note, *counts, participants, {}, sites=sites)
    metrics = {k: float(v) for k, v in (agg or {}).items() if isinstance(v, int | float)}
    return PhaseResult("done", "", *counts, participants, metrics, sites=sites)
