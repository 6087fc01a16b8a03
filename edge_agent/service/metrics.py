"""Prometheus metrics of one agent: requests, latencies, batch sizes, errors, model, device."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        yield prefix, float(value)
    elif isinstance(value, int | float):
        if value == value:  # NaN means "no reading": leave it out
            yield prefix, float(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}_{_NAME.sub('_', str(key)).lower()}", inner)


class _DeviceCollector(Collector):
    """Reads the telemetry snapshot at scrape time; every numeric leaf becomes a gauge."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            data = self._snapshot()
        except Exception:  # telemetry must never break a scrape
            return []
        families = []
        for name, value in _flatten("fovea_device", data):
            family = GaugeMetricFamily(name, "device telemetry reading")
            family.add_metric([], value)
            families.append(family)
        return families


class AgentMetrics:
    """The agent's metrics in their own registry (so several apps can live in one process)."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fovea_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fovea_request_seconds",
            "request latency by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "fovea_errors",
            "requests answered with an error, by endpoint and kind (client or server)",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fovea_batch_size",
            "rows per backend run of the dynamic batcher",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inferences = Counter(
            "fovea_inferences", "images run through the model", registry=self.registry
        )
        self.screenings = Counter(
            "fovea_screenings",
            "screened patients by recommendation",
            ["recommendation"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "fovea_model_version", "version of the bundle being served", registry=self.registry
        )
        self.model_info = Gauge(
            "fovea_model_info",
            "the model being served (value 1)",
            ["name", "version", "backend", "precision"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        if snapshot is not None:
            self.registry.register(_DeviceCollector(snapshot))

    def set_model(self, name: str, version: int, backend: str, precision: str) -> None:
        """Record which model is served."""
        self.model_version.set(version)
        self.model_info.labels(name, str(version), backend, precision).set(1)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:
            kind = "client" if 400 <= status < 500 else "server" if status >= 500 else ""
            children = (
                self.requests.labels(endpoint, str(status)),
                self.latency.labels(endpoint),
                self.errors.labels(endpoint, kind) if kind else None,
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    def observe_batch(self, size: int) -> None:
        """Record one backend run of ``size`` rows (the batcher's hook)."""
        self.batch_size.observe(size)
        self.inferences.inc(size)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything above."""
        return generate_latest(self.registry)


__all__ = ["AgentMetrics"]
