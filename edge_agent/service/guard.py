"""What the agent decides on a request's headers, before reading a byte of its body.

:class:`RequestGate` matches the request to a route, checks its token for the route's action,
its declared body against the route's limit and the memory of bodies in flight
(:class:`~edge_agent.service.memory.MemoryBudget`), and answers a refusal at once (401, 403,
404, 413, 503). :class:`ConnectionLimits` are the timeouts and the connection count the
connection protocol (:mod:`edge_agent.service.protocol`) enforces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from edge_agent.service.auth import Action, Principal, TokenCache, authorize
from edge_agent.service.errors import ApiError
from edge_agent.service.memory import MemoryBudget

SMALL_BODY = 64 * 1024
"""The body limit of routes that take no upload (reviews, and anything unnamed)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how many connections may be open.

    ``header_s``: from the connection's start (or its last response) to the end of the next
    request's headers; ``body_idle_s``: the longest pause while the body is arriving;
    ``request_s``: from a request's first byte to its last. A client over any of them is
    answered 408 and disconnected. Past ``max_connections`` the oldest connection that has
    not sent a whole request yet is closed for the new one (a slow client gives way to a
    health probe), or the new one is refused with 503 when every connection is working.
    """

    header_s: float = 10.0
    body_idle_s: float = 10.0
    request_s: float = 60.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for name in ("header_s", "body_idle_s", "request_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_connections < 2:
            raise ValueError(f"max_connections must be >= 2, got {self.max_connections}")

    @property
    def tick_s(self) -> float:
        """How often a connection's deadlines are looked at."""
        return min(1.0, self.header_s / 4, self.body_idle_s / 4, self.request_s / 4)


class Permission:
    """A FastAPI dependency: the caller's account if its token may do ``action`` (401/403).

    The gate reads ``action`` off each route's dependencies, so the permission a route
    declares is the one checked before its body is read.
    """

    def __init__(self, tokens: TokenCache, action: Action) -> None:
        self.tokens, self.action = tokens, action

    def __call__(self, request: Request) -> Principal:
        """The authorised account."""
        return authorize(self.tokens, request.headers.get("authorization"), self.action)


@dataclass(frozen=True)
class RouteRule:
    """One route as the gate sees it: its path, methods, the action it needs (None: open) and
    its body limit in bytes."""

    pattern: re.Pattern[str]
    methods: frozenset[str]
    action: Action | None
    max_body: int


def headers_named(headers: Iterable[tuple[bytes, bytes]], *names: bytes) -> list[bytes | None]:
    """The values of the (lower-case) ``names`` among a request's raw headers, in that order;
    None where one is absent."""
    found: dict[bytes, bytes | None] = dict.fromkeys(names)
    for key, value in headers:
        if key in found:
            found[key] = value
    return [found[name] for name in names]


def latin1(value: bytes | None) -> str | None:
    """A raw header value as text (HTTP headers are Latin-1), None kept."""
    return None if value is None else value.decode("latin-1")


def route_rules(routes: Iterable[Any], body_limits: Mapping[Action, int]) -> list[RouteRule]:
    """The rules of an app's FastAPI routes: each route's action from its :class:`Permission`
    dependency, its body limit from ``body_limits`` (others: :data:`SMALL_BODY`)."""
    rules = []
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        actions = [
            d.call.action for d in route.dependant.dependencies if isinstance(d.call, Permission)
        ]
        action = actions[0] if actions else None
        limit = body_limits.get(action, SMALL_BODY) if action is not None else SMALL_BODY
        rules.append(RouteRule(route.path_regex, frozenset(route.methods or ()), action, limit))
    return rules


class RequestGate:
    """Admits a request on its headers: route, token, declared length, memory for the body.

    :meth:`admit` returns the bytes reserved for the body in ``budget`` (release them with
    :meth:`release` when the request is answered) or raises the ApiError to answer at once.
    """

    def __init__(
        self,
        rules: list[RouteRule],
        tokens: TokenCache,
        limits: ConnectionLimits,
        budget: MemoryBudget,
        retry_after_s: int = 1,
    ) -> None:
        self.rules, self.tokens, self.limits, self.budget = rules, tokens, limits, budget
        self.retry_after_s = retry_after_s

    def admit(self, scope: Mapping[str, Any]) -> int:
        """Bytes reserved for the request's body; ApiError (401, 403, 404, 411, 413, 503)."""
        method, path = scope["method"], scope["path"]
        auth, length, encoding = headers_named(
            scope["headers"], b"authorization", b"content-length", b"transfer-encoding"
        )
        chunked = encoding is not None
        declared = _length(length)
        rule = self._match(method, path)
        if rule is None:
            if declared or chunked:  # nothing will read it: refuse without receiving it
                raise ApiError(404, f"no route for {method} {path[:200]}")
            return 0
        if rule.action is not None:
            authorize(self.tokens, latin1(auth), rule.action)
        if declared is not None and declared > rule.max_body:
            raise ApiError(
                413,
                f"request body of {declared:,} bytes exceeds this route's "
                f"{rule.max_body:,}-byte limit",
            )
        need = rule.max_body if declared is None and chunked else declared or 0
        if need and not self.budget.try_reserve(need):
            raise ApiError(
                503,
                f"the agent holds {self.budget.used:,} bytes of requests already (budget "
                f"{self.budget.limit:,}); retry in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        return need

    def release(self, reserved: int) -> None:
        """Give back what :meth:`admit` reserved."""
        if reserved:
            self.budget.release(reserved)

    def _match(self, method: str, path: str) -> RouteRule | None:
        allowed = None
        for rule in self.rules:
            if rule.pattern.match(path):
                if method in rule.methods or (method == "HEAD" and "GET" in rule.methods):
                    return rule
                allowed = allowed or rule
        return allowed  # a wrong method on a known path: its limits, FastAPI answers 405


def _length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        length = -1
    if length < 0:
        raise ApiError(400, f"header Content-Length must be a non-negative integer: {value[:40]!r}")
    return length


__all__ = [
    "SMALL_BODY",
    "ConnectionLimits",
    "Permission",
    "RequestGate",
    "RouteRule",
    "headers_named",
    "latin1",
    "route_rules",
]
