"""Aggregation rules (Flower's helpers) and the strategy the run config names."""

from __future__ import annotations

import numpy as np
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
)

from server.federation.settings import FederationSettings
from server.federation.strategies import aggregate_updates, make_strategy


def _u(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 2), value, dtype=np.float32), "b": np.full(3, value, np.float32)}


def test_fedavg_weights_by_examples() -> None:
    out = aggregate_updates("fedavg", [_u(0.0), _u(1.0)], [1.0, 3.0])
    np.testing.assert_allclose(out["w"], 0.75)
    assert out["w"].dtype == np.float32


def test_robust_rules_resist_one_outlier() -> None:
    updates = [_u(1.0), _u(1.1), _u(0.9), _u(1.05), _u(1000.0)]
    n = [10.0] * 5
    assert np.allclose(aggregate_updates("fedmedian", updates, n)["w"], 1.05)
    trimmed = aggregate_updates("fedtrimmedavg", updates, n, trim_beta=0.2)["w"]
    assert np.allclose(trimmed, np.mean([1.0, 1.1, 1.05]), atol=1e-6)
    krum = aggregate_updates("krum", updates, n, krum_malicious=1)["w"]
    assert float(krum.max()) < 2.0
    assert float(aggregate_updates("fedavg", updates, n)["w"].max()) > 100


def _settings(**over: object) -> FederationSettings:
    return FederationSettings.from_run_config({"model": "m.json", **over})


def test_make_strategy_by_name_with_settings() -> None:
    assert isinstance(make_strategy(_settings(strategy="fedmedian")), FedMedian)
    trimmed = make_strategy(_settings(strategy="fedtrimmedavg", **{"trim-beta": 0.1}))
    assert isinstance(trimmed, FedTrimmedAvg) and trimmed.beta == 0.1
    krum = make_strategy(_settings(strategy="krum", **{"krum-malicious": 1}))
    assert isinstance(krum, Krum) and krum.num_malicious_nodes == 1
    prox = make_strategy(_settings(**{"proximal-mu": 0.1}))
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.1
    assert prox.min_available_nodes == 2 and prox.weighted_by_key == "num-examples"
    dp = make_strategy(_settings(dp="server-fixed", **{"dp-clipping-norm": 2.0}))
    assert isinstance(dp, DifferentialPrivacyServerSideFixedClipping)
    assert dp.clipping_norm == 2.0 and isinstance(dp.strategy, FedProx)
