"""Prometheus metrics of one agent: requests, latencies, batch sizes, errors, model, device."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class _RequestTally(Collector):
    """Requests by endpoint and status, their latency and errors, counted in plain Python
    and turned into Prometheus families at scrape time.

    Counting a request is a dict lookup and three additions, instead of three
    prometheus-client updates (each with its own lock) on the hot path; the exposition is the
    same as a Counter, a Histogram and a Counter would give. Updates run on the event loop.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], list[float]] = {}
        """(endpoint, status) -> [count, seconds, one count per latency bucket and +Inf]."""

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        row = self._rows.get((endpoint, status))
        if row is None:
            row = self._rows[(endpoint, status)] = [0.0] * (len(_LATENCY_BUCKETS) + 3)
        row[0] += 1
        row[1] += seconds
        row[2 + bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1

    def collect(self) -> Iterable[CounterMetricFamily | HistogramMetricFamily]:
        rows = [(key, list(row)) for key, row in list(self._rows.items())]
        requests = CounterMetricFamily(
            "fovea_requests",
            "HTTP requests by endpoint and status code",
            labels=["endpoint", "status"],
        )
        errors = CounterMetricFamily(
            "fovea_errors",
            "requests answered with an error, by endpoint and kind (client or server)",
            labels=["endpoint", "kind"],
        )
        latency = HistogramMetricFamily(
            "fovea_request_seconds", "request latency by endpoint", labels=["endpoint"]
        )
        per_endpoint: dict[str, list[float]] = {}
        per_error: dict[tuple[str, str], float] = {}
        for (endpoint, status), row in rows:
            requests.add_metric([endpoint, str(status)], row[0])
            total = per_endpoint.setdefault(endpoint, [0.0] * len(row))
            for i, value in enumerate(row):
                total[i] += value
            kind = "client" if 400 <= status < 500 else "server" if status >= 500 else ""
            if kind:
                per_error[(endpoint, kind)] = per_error.get((endpoint, kind), 0.0) + row[0]
        for (endpoint, kind), count in per_error.items():
            errors.add_metric([endpoint, kind], count)
        for endpoint, total in per_endpoint.items():
            bounds = [*map(floatToGoString, _LATENCY_BUCKETS), "+Inf"]
            cumulative, buckets = 0.0, []
            for bound, count in zip(bounds, total[2:], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([endpoint], buckets, sum_value=total[1])
        return [requests, latency, errors]


class AgentMetrics:
    """The agent's metrics in their own registry (so several apps can live in one process)."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._requests = _RequestTally()
        self.registry.register(self._requests)
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
        if snapshot is not None:
            self.registry.register(_DeviceCollector(snapshot))

    def set_model(self, name: str, version: int, backend: str, precision: str) -> None:
        """Record which model is served."""
        self.model_version.set(version)
        self.model_info.labels(name, str(version), backend, precision).set(1)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        self._requests.observe(endpoint, status, seconds)

    def observe_batch(self, size: int) -> None:
        """Record one backend run of ``size`` rows (the batcher's hook)."""
        self.batch_size.observe(size)
        self.inferences.inc(size)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything above."""
        return generate_latest(self.registry)


__all__ = ["AgentMetrics"]
