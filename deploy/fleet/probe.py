"""Asking an agent how it is: readiness, status (with the fleet token) and error counters."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
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


def _get(url: str, token: str | None, timeout: float, method: str = "GET") -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
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


async def approve_threshold(
    base_url: str, token: str, reason: str, timeout: float = 30.0
) -> dict[str, Any]:
    """``POST /v1/threshold/approve`` (an admin's token: the fleet's), ``reason`` going into the
    device's audit entry: its threshold status after; ConnectionError naming why the device
    refused (409: no proposal ready)."""
    url = f"{base_url}/v1/threshold/approve?{urllib.parse.urlencode({'reason': reason})}"
    reply = await asyncio.to_thread(_get, url, token, timeout, "POST")
    if not reply.ok:
        try:
            why = json.loads(reply.body).get("error") or reply.error
        except ValueError:
            why = reply.error
        raise ConnectionError(f"{base_url}: the threshold was not approved: {why}")
    return dict(json.loads(reply.body))


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


STARTING = "starting"
"""``/v2/health/ready`` state while the agent starts its worker and builds engines (a 503)."""


def readiness(reply: Reply) -> tuple[str | None, str]:
    """(state, progress) of a not-ready answer: the JSON body's ``state`` ("starting",
    "refused", "failed") and ``progress`` text; (None, why) when the body says neither."""
    why = reply.error or f"HTTP {reply.status}"
    try:
        body = json.loads(reply.body) if reply.body else None
    except ValueError:
        return None, why
    if not isinstance(body, dict) or not isinstance(body.get("state"), str):
        return None, why
    progress = body.get("progress")
    return body["state"], str(progress) if progress is not None else body["state"]


async def wait_ready(
    base_url: str,
    timeout: float,
    interval: float = 0.25,
    *,
    build_timeout: float | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> float:
    """Seconds until ``/v2/health/ready`` answered 200; raises TimeoutError naming the last
    answer when it did not within ``timeout``.

    An agent that answers 503 with ``"state": "starting"`` (its worker starts, engines build)
    is waited on up to ``build_timeout`` seconds in all (each new progress text goes to
    ``on_progress``); once it stops saying so, the usual ``timeout`` counts again from there.
    """
    t0 = time.perf_counter()
    deadline, build_end = t0 + timeout, t0 + max(build_timeout or 0.0, timeout)
    last, shown, starting = Reply(0, b"", "no answer yet"), None, False
    while time.perf_counter() < deadline:
        last = await ready(base_url, timeout=min(5.0, timeout))
        if last.ok:
            return time.perf_counter() - t0
        state, progress = readiness(last)
        starting = last.status == 503 and state == STARTING and build_timeout is not None
        if starting:
            deadline = min(build_end, max(deadline, time.perf_counter() + timeout))
            if on_progress is not None and progress != shown:
                on_progress(progress)
            shown = progress
        await asyncio.sleep(interval)
    if starting:
        raise TimeoutError(
            f"{base_url} was still starting after {build_end - t0:.0f}s (build timeout; last "
            f"progress: {shown})"
        )
    raise TimeoutError(
        f"{base_url} was not ready within {timeout:.0f}s (last answer: {last.error or last.status})"
    )


__all__ = [
    "ERROR_FAMILY",
    "STARTING",
    "Reply",
    "count_errors",
    "get",
    "readiness",
    "ready",
    "server_errors",
    "status",
    "wait_ready",
]
