"""The agent's request metrics, tallied in Python and exposed at scrape time, read back as a
Prometheus Counter and Histogram would be: counts by status, errors by kind, cumulative
latency buckets."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.service.metrics import AgentMetrics


def _samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_requests_errors_and_latency_buckets() -> None:
    metrics = AgentMetrics()
    for status, seconds in ((200, 0.002), (200, 0.5), (400, 0.001), (503, 20.0)):
        metrics.observe("infer", status, seconds)
    got = _samples(metrics)
    assert got[("fovea_requests_total", (("endpoint", "infer"), ("status", "200")))] == 2
    assert got[("fovea_errors_total", (("endpoint", "infer"), ("kind", "client")))] == 1
    assert got[("fovea_errors_total", (("endpoint", "infer"), ("kind", "server")))] == 1

    def bucket(le: str) -> float:
        return got[("fovea_request_seconds_bucket", (("endpoint", "infer"), ("le", le)))]

    assert (bucket("0.001"), bucket("0.0025"), bucket("0.5"), bucket("10.0")) == (1, 2, 3, 3)
    assert bucket("+Inf") == got[("fovea_request_seconds_count", (("endpoint", "infer"),))] == 4
    assert got[("fovea_request_seconds_sum", (("endpoint", "infer"),))] == 20.503
