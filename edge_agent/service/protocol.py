"""KServe ``infer`` answered on the connection: uvicorn's httptools protocol without ASGI.

uvicorn parses the request (httptools), keeps the connection (keep-alive, pipelining, flow
control, shutdown) and collects the body in its request cycle as usual; only for an infer
request does the cycle run :class:`~edge_agent.service.fastpath.InferHandler` directly instead
of the ASGI app, and write the reply in one ``transport.write``. That skips, per request, the
ASGI receive/send messages, a copy of the body, uvicorn's header checks and a second write.
Every other request goes to the app unchanged, and so does every request when uvicorn's
internals are not the ones this was written against (:func:`http_protocol`).
"""

from __future__ import annotations

import asyncio
import http
import inspect
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any

from edge_agent.service.errors import ApiError
from edge_agent.service.fastpath import INFER_PATH, InferHandler

_log = logging.getLogger(__name__)
_CYCLE_FIELDS = (
    "scope",
    "transport",
    "flow",
    "default_headers",
    "message_event",
    "expect_100_continue",
    "keep_alive",
    "on_response",
)
_CLOSE = (b"connection", b"close")


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_STATUS = {s.value: _status_line(s.value) for s in http.HTTPStatus}


async def _read_cycle_body(cycle: Any, limit: int, declared: int | None) -> bytes:
    """The body uvicorn's cycle collects; ApiError(413) as soon as it exceeds ``limit``."""
    if declared is not None and declared > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the {limit}-byte limit")
    if cycle.waiting_for_100_continue and not cycle.transport.is_closing():
        cycle.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        cycle.waiting_for_100_continue = False
    while cycle.more_body and not cycle.disconnected:
        if len(cycle.body) > limit:
            raise ApiError(413, f"request body exceeds the {limit}-byte limit")
        cycle.flow.resume_reading()  # uvicorn pauses reading past 64 KiB until asked for more
        await cycle.message_event.wait()
        cycle.message_event.clear()
    if cycle.disconnected:
        raise ApiError(400, "client disconnected before sending the whole body")
    if len(cycle.body) > limit:
        raise ApiError(413, f"request body exceeds the {limit}-byte limit")
    body: bytes = cycle.body  # a bytearray: numpy reads it in place, no copy
    return body


async def answer_on_connection(handler: InferHandler, cycle: Any, match: re.Match[str]) -> None:
    """Answer the infer request of uvicorn's ``cycle`` and finish the cycle as uvicorn would."""
    start = time.perf_counter()

    def read(declared: int | None) -> Awaitable[bytes]:
        return _read_cycle_body(cycle, handler.max_bytes, declared)

    try:
        status, headers, body = await handler.reply(cycle.scope["headers"], match, read)
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        _write(cycle, status, headers, body)
    except BaseException:
        cycle.transport.close()  # never leave a client waiting for an answer that won't come
        raise
    finally:
        cycle.on_response = lambda: None
    handler.metrics.observe("infer", status, time.perf_counter() - start)


def _write(cycle: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """The whole response in one write, then uvicorn's end-of-response bookkeeping."""
    if cycle.disconnected:
        return
    if _CLOSE in cycle.scope["headers"]:
        cycle.keep_alive = False
    parts = [_STATUS.get(status) or _status_line(status)]
    for name, value in (*cycle.default_headers, *headers):
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    cycle.response_started = True
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


def http_protocol() -> type[asyncio.Protocol] | str:
    """What to pass as uvicorn's ``http``: its httptools protocol answering infer requests on
    the connection, or ``"auto"`` where httptools is missing or uvicorn's request cycle is not
    the one this module was written against (then infer goes through ASGI, only slower)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    except ImportError:
        return "auto"
    fields = inspect.signature(RequestResponseCycle.__init__).parameters
    missing = [f for f in _CYCLE_FIELDS if f not in fields]
    if missing or not hasattr(HttpToolsProtocol, "_start_asgi_task"):
        _log.warning(
            "uvicorn's request cycle lacks %s: infer requests go through ASGI", missing or "hooks"
        )
        return "auto"

    class InferProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol; infer requests of an AgentApp skip the ASGI cycle."""

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            handler = getattr(app, "infer_handler", None)
            scope = cycle.scope
            if handler is not None and scope["method"] == "POST":
                match = INFER_PATH.fullmatch(scope["path"])
                if match is not None:
                    task = self.loop.create_task(answer_on_connection(handler, cycle, match))
                    task.add_done_callback(self.tasks.discard)
                    self.tasks.add(task)
                    return
            super()._start_asgi_task(cycle, app)

    return InferProtocol


__all__ = ["answer_on_connection", "http_protocol"]
