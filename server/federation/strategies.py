"""Flower's strategies by run config name, with DP wrappers; and the same rules as a plain function.

The ServerApp uses Flower's own ``flwr.serverapp.strategy`` classes. ``aggregate_updates``
applies the same aggregation rules (via Flower's helpers where they exist) to numpy dicts, for
tests and in-process benchmarks, where no ``Message`` can be built.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from edge_agent.fl import ARRAYS, CONFIG, M_NUM_EXAMPLES, METRICS
from server.federation.settings import FederationSettings
from server.federation.weights import Weights

__all__ = ["aggregate_updates", "make_strategy"]


def make_strategy(settings: FederationSettings) -> Strategy:
    """The Flower strategy the run config names, wrapped for DP when ``dp`` is not ``none``."""
    common = {
        "fraction_train": settings.fraction_train,
        "fraction_evaluate": settings.fraction_evaluate,
        "min_train_nodes": settings.min_train_nodes,
        "min_evaluate_nodes": settings.min_evaluate_nodes,
        "min_available_nodes": settings.min_available_nodes,
        "weighted_by_key": M_NUM_EXAMPLES,
        "arrayrecord_key": ARRAYS,
        "configrecord_key": CONFIG,
    }
    base: Strategy
    if settings.strategy == "fedavg":
        base = FedAvg(**common)  # type: ignore[arg-type]
    elif settings.strategy == "fedprox":
        base = FedProx(**common, proximal_mu=settings.proximal_mu)  # type: ignore[arg-type]
    elif settings.strategy == "fedmedian":
        base = FedMedian(**common)  # type: ignore[arg-type]
    elif settings.strategy == "fedtrimmedavg":
        base = FedTrimmedAvg(**common, beta=settings.trim_beta)  # type: ignore[arg-type]
    else:
        base = Krum(**common, num_malicious_nodes=settings.krum_malicious)  # type: ignore[arg-type]
    if settings.dp == "none":
        return base
    wrapper = (
        DifferentialPrivacyServerSideFixedClipping
        if settings.dp == "server-fixed"
        else DifferentialPrivacyClientSideFixedClipping
    )
    return wrapper(
        base,
        noise_multiplier=settings.dp_noise_multiplier,
        clipping_norm=settings.dp_clipping_norm,
        num_sampled_clients=settings.min_train_nodes,
    )


def _records(updates: Sequence[Weights], num_examples: Sequence[float]) -> list[RecordDict]:
    return [
        RecordDict(
            {
                ARRAYS: ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in w.items()}),
                METRICS: MetricRecord({M_NUM_EXAMPLES: float(n)}),
            }
        )
        for w, n in zip(updates, num_examples, strict=True)
    ]


def aggregate_updates(
    strategy: str,
    updates: Sequence[Weights],
    num_examples: Sequence[float],
    *,
    trim_beta: float = 0.2,
    krum_malicious: int = 0,
) -> Weights:
    """Aggregate screened updates by the rule of ``strategy`` (as Flower's strategy does).

    fedavg/fedprox: mean weighted by examples; fedmedian: element-wise median; fedtrimmedavg:
    element-wise mean without the ``trim_beta`` share at each tail; krum: the one update
    closest to its neighbours. Results keep the first update's dtypes.
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    names = list(updates[0])
    if strategy in ("fedavg", "fedprox"):
        merged = aggregate_arrayrecords(_records(updates, num_examples), M_NUM_EXAMPLES)
        out = {k: merged[k].numpy() for k in names}
    elif strategy == "fedmedian":
        out = {k: np.median(np.stack([u[k] for u in updates]), axis=0) for k in names}
    elif strategy == "fedtrimmedavg":
        out = {k: trim_mean(np.stack([u[k] for u in updates]), trim_beta) for k in names}
    elif strategy == "krum":
        chosen = select_multikrum(_records(updates, num_examples), krum_malicious, 1)[0]
        record = chosen[ARRAYS]
        assert isinstance(record, ArrayRecord)
        out = {k: record[k].numpy() for k in names}
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return {k: np.asarray(v).astype(updates[0][k].dtype) for k, v in out.items()}
