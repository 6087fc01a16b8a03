"""The hot path: KServe ``infer`` as a plain ASGI handler in front of FastAPI, plus body limits.

Infer requests skip FastAPI entirely (middleware, routing, dependency injection, pydantic
response models): the body is read once, binary tensors become numpy views of it, and the
reply is one ``bytes`` write. Work that grows with what a client sends (inflating a compressed
body, parsing a large JSON one) runs in a bounded pool, never on the event loop.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from edge_agent.service.auth import TokenCache, authorize
from edge_agent.service.codec import decode_request, encode_response
from edge_agent.service.errors import ApiError
from edge_agent.service.guard import headers_named, latin1
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.predictor import ModelInfo, Predictor, model_input
from edge_agent.service.screen import Screening
from edge_agent.service.workpool import WorkPool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
SCREEN_PATH = re.compile(r"/v1/screen")
_JSON = (b"content-type", b"application/json")
_BINARY = (b"content-type", b"application/octet-stream")
INLINE_JSON = 64 * 1024
"""JSON up to this size is parsed on the event loop (cheaper than a thread hand-over)."""
HEADER_ALLOWANCE = 1 << 20
"""Room for an infer request's JSON header beside its binary tensors."""


def infer_body_limit(info: ModelInfo) -> int:
    """The largest infer body worth reading for a model: ``max_request_rows`` images of its
    input as binary float32, plus :data:`HEADER_ALLOWANCE` (a JSON body of that size holds
    fewer rows: send binary tensors)."""
    shape = info.inputs[0].shape[1:]
    per_row = 4
    for side in shape:
        per_row *= max(int(side), 1)
    return info.max_request_rows * per_row + HEADER_ALLOWANCE


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
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_headers(error: ApiError) -> list[tuple[bytes, bytes]]:
    """The headers of ``error``'s JSON reply (a bearer challenge with a 401, and the error's
    own, such as Retry-After)."""
    headers = [_JSON, *((k.lower().encode(), v.encode()) for k, v in error.headers.items())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    return headers


async def send_error(send: Send, error: ApiError) -> None:
    """Send ``{"error": ...}`` with the error's status."""
    await send_bytes(send, error.status, error.body(), error_headers(error))


BodyReader = Callable[[int | None], Awaitable[bytes]]
"""Reads the whole request body given its declared Content-Length (ApiError 413 past the limit)."""
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
"""A whole response: status, headers (no Content-Length), body."""


class InferHandler:
    """``POST /v2/models/{name}[/versions/{v}]/infer`` against one Predictor.

    Called as ASGI by :class:`~edge_agent.service.app.AgentApp`, or through :meth:`reply` by
    :mod:`edge_agent.service.protocol`, which answers on the connection itself.
    """

    endpoint = "infer"

    def __init__(
        self,
        predictor: Predictor,
        tokens: TokenCache,
        metrics: AgentMetrics,
        max_bytes: int,
        pool: WorkPool | None = None,
    ) -> None:
        self.predictor = predictor
        self.tokens = tokens
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.pool = pool or WorkPool(1, 32, name="parse")

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
    ) -> None:
        """Answer one infer request over ASGI."""
        start = time.perf_counter()

        def read(declared: int | None) -> Awaitable[bytes]:
            return read_body(receive, self.max_bytes, declared)

        status, headers, body = await self.reply(scope["headers"], match, read)
        await send_bytes(send, status, body, headers)
        self.metrics.observe("infer", status, time.perf_counter() - start)

    async def reply(
        self, headers: Iterable[tuple[bytes, bytes]], match: re.Match[str], read: BodyReader
    ) -> Reply:
        """The response to one infer request; every failure becomes a JSON error reply."""
        try:
            body, header_length = await self._handle(headers, match, read)
        except ApiError as error:
            return error.status, error_headers(error), error.body()
        except Exception as exc:  # the backend failed: the agent's fault, said plainly
            failed = ApiError(500, f"inference failed: {type(exc).__name__}: {exc}")
            return 500, error_headers(failed), failed.body()
        if header_length is None:
            return 200, [_JSON], body
        return 200, [_BINARY, (b"inference-header-content-length", b"%d" % header_length)], body

    async def _handle(
        self, headers: Iterable[tuple[bytes, bytes]], match: re.Match[str], read: BodyReader
    ) -> tuple[bytes, int | None]:
        auth, length, header_length, encoded = headers_named(
            headers,
            b"authorization",
            b"content-length",
            b"inference-header-content-length",
            b"content-encoding",
        )
        encoding = (latin1(encoded) or "").strip().lower()
        authorize(self.tokens, latin1(auth), "infer")
        info = self.predictor.info
        name, version = match.group(1), match.group(2)
        if name != info.name or (version is not None and version != str(info.version)):
            shown = name if version is None else f"{name} version {version}"
            raise ApiError(
                404,
                f"unknown model {shown!r}; this agent serves {info.name!r} version {info.version}",
            )
        if not self.predictor.ready():
            refused = getattr(self.predictor, "refused", None)  # a slot that stopped verifying
            if refused:
                raise ApiError(503, f"model {info.name!r} is not served: {refused}")
            raise ApiError(503, f"model {info.name!r} is not ready yet", {"Retry-After": "1"})
        body = await read(_int_header(length, "Content-Length"))
        json_length = _int_header(header_length, "Inference-Header-Content-Length")
        if encoding or (len(body) if json_length is None else json_length) > INLINE_JSON:
            async with self.pool.admitted():
                request, images = await self.pool.run(self._parse, body, encoding, json_length)
        else:
            request, images = self._parse(body, encoding, json_length)
        results = await self.predictor.infer(images)
        return encode_response(info.name, str(info.version), request, results)

    def _parse(self, body: bytes, encoding: str, json_length: int | None) -> tuple[Any, Any]:
        """The request and its model input from the body (inflated first if encoded)."""
        if encoding:
            body = decompress(body, encoding, self.max_bytes)
        request = decode_request(body, json_length)
        return request, model_input(request, self.predictor.info)


def _int_header(value: bytes | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"header {name} must be an integer, got {value[:40]!r}") from None


class ScreenHandler:
    """``POST /v1/screen`` answered on the connection by :mod:`edge_agent.service.protocol`:
    the FastAPI route's Screening without routing, dependency injection or a response class."""

    endpoint = "/v1/screen"

    def __init__(
        self, screening: Screening, tokens: TokenCache, metrics: AgentMetrics, max_bytes: int
    ) -> None:
        self.screening, self.tokens = screening, tokens
        self.metrics, self.max_bytes = metrics, max_bytes

    async def reply(
        self, headers: Iterable[tuple[bytes, bytes]], _: re.Match[str], read: BodyReader
    ) -> Reply:
        """The response to one screening request; every failure becomes a JSON error reply."""
        auth, length, content_type = headers_named(
            headers, b"authorization", b"content-length", b"content-type"
        )
        try:
            user = authorize(self.tokens, latin1(auth), "screen")
            body = await read(_int_header(length, "Content-Length"))
            answer = await self.screening.screen(body, latin1(content_type), user)
        except ApiError as error:
            return error.status, error_headers(error), error.body()
        except Exception as exc:  # the agent's own fault, said plainly
            failed = ApiError(500, f"screening failed: {type(exc).__name__}")
            return 500, error_headers(failed), failed.body()
        text = json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return 200, [_JSON], text.encode()


class LimitMiddleware:
    """Caps the body of every request FastAPI answers (413 past ``max_bytes``, counted as the
    app reads it, never read ahead of the app) and observes its status and latency."""

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
        received = 0

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise ApiError(413, f"request body exceeds the {self.max_bytes}-byte limit")
            return message

        try:
            declared = None
            for key, value in scope["headers"]:
                if key == b"content-length":
                    declared = _int_header(value, "Content-Length")
            if declared is not None and declared > self.max_bytes:
                await send_error(
                    timed_send,
                    ApiError(413, f"request body of {declared} bytes exceeds the limit"),
                )
                return
            await self.app(scope, counted_receive, timed_send)
        except ApiError as error:  # a bad Content-Length
            await send_error(timed_send, error)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(endpoint, status, time.perf_counter() - start)


__all__ = [
    "INFER_PATH",
    "SCREEN_PATH",
    "BodyReader",
    "InferHandler",
    "LimitMiddleware",
    "Reply",
    "ScreenHandler",
    "decompress",
    "error_headers",
    "infer_body_limit",
    "read_body",
]
