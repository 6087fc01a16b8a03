"""Asking an agent how it is: readiness, status (with the fleet token) and error counters."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ERROR_FAMILY = "fovea_errors"
"""The agent's error counter (labels: endpoint, kind = client | server)."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status code (0 when none came) and body, or why none came."""

    status: int
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True for a 200."""
        return self.status == 200


def _get(url: str, token: str | None, timeout: float) -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    context = ssl.create_default_context() if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            return Reply(r.status, r.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Reply(0, b"", f"unreachable: {reason}")


async def get(url: str, token: str | None = None, timeout: float = 5.0) -> Reply:
    """GET ``url`` without blocking the event loop."""
    return await asyncio.to_thread(_get, url, token, timeout)


async def ready(base_url: str, timeout: float = 5.0) -> Reply:
    """``/v2/health/ready``: 200 when the model can answer."""
    return await get(f"{base_url}/v2/health/ready", None, timeout)


async def status(base_url: str, token: str, timeout: float = 10.0) -> dict[str, Any]:
    """``/v1/status`` as JSON; raises ConnectionError naming the URL and what went wrong."""
    reply = await get(f"{base_url}/v1/status", token, timeout)
    if not reply.ok:
        hint = " (is the fleet token right?)" if reply.status in (401, 403) else ""
        raise ConnectionError(f"{base_url}/v1/status: {reply.error or reply.status}{hint}")
    try:
        return dict(json.loads(reply.body))
    except ValueError:
        raise ConnectionError(f"{base_url}/v1/status: the answer is not JSON") from None


async def server_errors(base_url: str, timeout: float = 5.0) -> float | None:
    """The agent's count of server-side errors (5xx) from ``/metrics``; None when unreadable."""
    reply = await get(f"{base_url}/metrics", None, timeout)
    return count_errors(reply.body.decode(errors="replace"), "server") if reply.ok else None


def count_errors(metrics_text: str, kind: str = "server") -> float:
    """Sum of the ``fovea_errors`` counter samples of ``kind`` in Prometheus text."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != ERROR_FAMILY:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("kind") == kind:
                total += sample.value
    return total


async def wait_ready(base_url: str, timeout: float, interval: float = 0.25) -> float:
    """Seconds until ``/v2/health/ready`` answered 200; raises TimeoutError naming the last
    answer when it did not within ``timeout``."""
    t0 = time.perf_counter()
    last = Reply(0, b"", "no answer yet")
    while time.perf_counter() - t0 < timeout:
        last = await ready(base_url, timeout=min(5.0, timeout))
        if last.ok:
            return time.perf_counter() - t0
        await asyncio.sleep(interval)
    raise TimeoutError(
        f"{base_url} was not ready within {timeout:.0f}s (last answer: {last.error or last.status})"
    )


__all__ = [
    "ERROR_FAMILY",
    "Reply",
    "count_errors",
    "get",
    "ready",
    "server_errors",
    "status",
    "wait_ready",
]
