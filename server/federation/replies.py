"""Reading the devices' replies: what each node sent, declined or failed, as plain values.

Only arrays and metrics may come back (plus a decline reason): a reply carrying any other
record is rejected, so nothing but weights and numbers leaves a site.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from edge_agent.fl import ARRAYS, M_DECLINED, M_NUM_EXAMPLES, METRICS, S_REASON, S_SITE, STATUS
from server.federation.weights import Weights

__all__ = ["Reply", "read_reply", "to_record", "to_weights", "unify_metrics"]


@dataclass(frozen=True)
class Reply:
    """One node's reply: ``kind`` is ``update`` (train), ``metrics`` (evaluate), ``declined``,
    ``error`` or ``invalid``; ``reason`` says why for the last three."""

    node_id: int
    kind: str
    reason: str = ""
    payload: Weights = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    site: str = ""
    """The site name an evaluation reply gave (its node config ``site``), or empty."""

    @property
    def num_examples(self) -> float:
        """The weight of this reply in averages."""
        return float(self.metrics.get(M_NUM_EXAMPLES, 0.0))


def to_weights(record: ArrayRecord) -> Weights:
    """An ArrayRecord as numpy arrays, in the record's order."""
    return {k: record[k].numpy() for k in record}


def to_record(weights: Weights) -> ArrayRecord:
    """Numpy arrays as an ArrayRecord (order kept)."""
    return ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in weights.items()})


def _numbers(record: MetricRecord) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}


def read_reply(msg: Message, *, train: bool) -> Reply:
    """Classify a reply message; never raises on what a device sent."""
    node = int(msg.metadata.src_node_id)
    if msg.has_error():
        return Reply(node, "error", f"ClientApp failed: {msg.error.reason}")
    content: RecordDict = msg.content
    metrics_record = content.get(METRICS)
    if not isinstance(metrics_record, MetricRecord):
        return Reply(node, "invalid", f"no MetricRecord {METRICS!r} in the reply")
    metrics = _numbers(metrics_record)
    if metrics.get(M_DECLINED, 0.0):
        status = content.get(STATUS)
        reason = str(status.get(S_REASON, "")) if isinstance(status, ConfigRecord) else ""
        return Reply(node, "declined", reason or "declined without a reason", metrics=metrics)
    allowed = {ARRAYS, METRICS} if train else {METRICS, STATUS}
    extra = sorted(set(content.keys()) - allowed)
    if extra:
        return Reply(node, "invalid", f"unexpected records {extra} (only {sorted(allowed)})")
    if train:
        arrays = content.get(ARRAYS)
        if not isinstance(arrays, ArrayRecord):
            return Reply(node, "invalid", f"no ArrayRecord {ARRAYS!r} in the reply")
        return Reply(node, "update", payload=to_weights(arrays), metrics=metrics)
    status = content.get(STATUS)
    site = str(status.get(S_SITE, "")) if isinstance(status, ConfigRecord) else ""
    return Reply(node, "metrics", metrics=metrics, site=site[:64])


def unify_metrics(metrics: Iterable[dict[str, float]]) -> set[str]:
    """The metric keys every reply has (Flower's aggregation needs the same keys everywhere)."""
    sets = [set(m) for m in metrics]
    return set.intersection(*sets) if sets else set()
