"""The hot path: KServe ``infer`` as a plain ASGI handler in front of FastAPI, plus body limits.

Infer requests skip FastAPI entirely (middleware, routing, dependency injection, pydantic
response models): the body is read once, binary tensors become numpy views of it, and the
reply is one ``bytes`` write.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from edge_agent.service.auth import TokenCache, authorize
from edge_agent.service.codec import decode_request, encode_response
from edge_agent.service.errors import ApiError
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.predictor import Predictor, model_input

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_JSON = (b"content-type", b"application/json")


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The whole request body; ApiError(413) as soon as it is known to exceed ``limit``."""
    if declared is not None and declared > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate, refusing output beyond ``limit`` bytes."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, f"the {encoding} body is corrupt: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ApiError(413, f"the decompressed body exceeds the {limit}-byte limit")
    if not inflater.eof:
        raise ApiError(400, f"the {encoding} body is truncated")
    return out


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Send a whole response in two ASGI messages."""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ApiError) -> None:
    """Send ``{"error": ...}`` with the error's status."""
    headers = [_JSON]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send_bytes(send, error.status, error.body(), headers)


class InferHandler:
    """``POST /v2/models/{name}[/versions/{v}]/infer`` against one Predictor."""

    def __init__(
        self, predictor: Predictor, tokens: TokenCache, metrics: AgentMetrics, max_bytes: int
    ) -> None:
        self.predictor = predictor
        self.tokens = tokens
        self.metrics = metrics
        self.max_bytes = max_bytes

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
    ) -> None:
        """Answer one infer request; every failure becomes a JSON error, never an exception."""
        start = time.perf_counter()
        status = 200
        try:
            body, header_length = await self._handle(scope, receive, match)
            headers = [
                (
                    b"content-type",
                    b"application/octet-stream" if header_length else b"application/json",
                )
            ]
            if header_length is not None:
                headers.append((b"inference-header-content-length", str(header_length).encode()))
            await send_bytes(send, 200, body, headers)
        except ApiError as error:
            status = error.status
            await send_error(send, error)
        except Exception as exc:  # the backend failed: the agent's fault, said plainly
            status = 500
            await send_error(send, ApiError(500, f"inference failed: {type(exc).__name__}: {exc}"))
        self.metrics.observe("infer", status, time.perf_counter() - start)

    async def _handle(
        self, scope: Scope, receive: Receive, match: re.Match[str]
    ) -> tuple[bytes, int | None]:
        auth = length = header_length = None
        encoding = ""
        for key, value in scope["headers"]:
            if key == b"authorization":
                auth = value.decode("latin-1")
            elif key == b"content-length":
                length = value
            elif key == b"inference-header-content-length":
                header_length = value
            elif key == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        authorize(self.tokens, auth, "infer")
        info = self.predictor.info
        name, version = match.group(1), match.group(2)
        if name != info.name or (version is not None and version != str(info.version)):
            shown = name if version is None else f"{name} version {version}"
            raise ApiError(
                404,
                f"unknown model {shown!r}; this agent serves {info.name!r} version {info.version}",
            )
        if not self.predictor.ready():
            raise ApiError(503, f"model {info.name!r} is not ready yet")
        declared = _int_header(length, "Content-Length")
        body = await read_body(receive, self.max_bytes, declared)
        body = decompress(body, encoding, self.max_bytes)
        request = decode_request(
            body, _int_header(header_length, "Inference-Header-Content-Length")
        )
        images = model_input(request, info)
        results = await self.predictor.infer(images)
        return encode_response(info.name, str(info.version), request, results)


def _int_header(value: bytes | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"header {name} must be an integer, got {value[:40]!r}") from None


class LimitMiddleware:
    """Caps the body of every request FastAPI answers and observes its status and latency."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: AgentMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._limited(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(endpoint, status, time.perf_counter() - start)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
                break
        if declared is None and scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.max_bytes, _int_header(declared, "Content-Length"))
        except ApiError as error:
            await send_error(send, error)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


__all__ = ["INFER_PATH", "InferHandler", "LimitMiddleware", "decompress", "read_body"]
