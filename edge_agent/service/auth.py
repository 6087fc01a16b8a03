"""Bearer-token authentication with roles: technicians screen, clinicians review, admins manage."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from edge_agent.service.errors import ApiError

Role = Literal["technician", "clinician", "admin"]
Action = Literal["infer", "screen", "review", "status", "manage"]

PERMISSIONS: dict[Action, frozenset[str]] = {
    "infer": frozenset({"technician", "clinician", "admin"}),
    "screen": frozenset({"technician", "clinician"}),
    "review": frozenset({"clinician"}),
    "status": frozenset({"technician", "clinician", "admin"}),
    "manage": frozenset({"admin"}),
}
"""Which roles may do what. Health checks and /metrics need no token at all."""


@dataclass(frozen=True)
class Principal:
    """An authenticated account: its name (recorded in the audit log) and role."""

    name: str
    role: str


class Authenticator(Protocol):
    """Looks a bearer token up: the account it belongs to, or None (the store implements it)."""

    def authenticate(self, token: str) -> object | None:
        """The user (with ``name`` and ``role`` attributes) owning ``token``, or None."""
        ...


class TokenCache:
    """Authenticates tokens through an Authenticator, remembering answers for ``ttl`` seconds.

    The short memory keeps a database lookup off every request of the hot path; a disabled
    account stops working within ``ttl`` seconds.
    """

    def __init__(self, source: Authenticator, ttl: float = 2.0, max_entries: int = 1024) -> None:
        if ttl < 0:
            raise ValueError(f"token cache ttl must be >= 0 seconds, got {ttl}")
        self._source = source
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, token: str) -> Principal | None:
        """The account owning ``token``, or None when the token is unknown or disabled."""
        now = time.monotonic()
        hit = self._entries.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        user = self._source.authenticate(token)
        principal = None if user is None else Principal(str(user.name), str(user.role))  # type: ignore[attr-defined]
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[token] = (now + self._ttl, principal)
        return principal

    def clear(self) -> None:
        """Forget every cached answer (after adding or disabling an account)."""
        with self._lock:
            self._entries.clear()


def token_from_header(value: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; ApiError(401) otherwise."""
    if not value:
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        raise ApiError(401, "malformed Authorization header: expected 'Bearer <token>'")
    return token


def authorize(cache: TokenCache, header: str | None, action: Action) -> Principal:
    """The account behind ``header`` if its role may do ``action``; ApiError 401/403 otherwise."""
    principal = cache.lookup(token_from_header(header))
    if principal is None:
        raise ApiError(401, "unknown or disabled token")
    if principal.role not in PERMISSIONS[action]:
        allowed = ", ".join(sorted(PERMISSIONS[action]))
        raise ApiError(
            403, f"user {principal.name!r} ({principal.role}) may not {action}; needs: {allowed}"
        )
    return principal


__all__ = [
    "PERMISSIONS",
    "Action",
    "Authenticator",
    "Principal",
    "Role",
    "TokenCache",
    "authorize",
    "token_from_header",
]
