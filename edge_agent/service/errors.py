"""The one error type the service answers with: an HTTP status and a clear message."""

from __future__ import annotations

import json


class ApiError(Exception):
    """A client-facing error: ``status`` (4xx, or 5xx for the agent's own faults) and a message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        """The JSON body, KServe style: ``{"error": message}``."""
        return json.dumps({"error": self.message}).encode()
