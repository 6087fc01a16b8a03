"""The agent's HTTP connections: uvicorn's httptools protocol, guarded, with infer answered on it.

uvicorn parses requests (httptools) and runs the ASGI app; this subclass adds what uvicorn
lacks (its keep-alive timer restarts on every byte and it has no request deadline):

- **Admission on the headers.** Before a byte of the body is read, the app's
  :class:`~edge_agent.service.guard.RequestGate` checks route, token, declared length and the
  memory of bodies in flight; a refusal (401, 403, 404, 413, 503) is answered at once and the
  connection closed when the body is still coming, so nobody can make the agent hold bodies
  it will not accept.
- **Deadlines.** Headers within ``header_s`` of the connection's start (or its last reply),
  no pause in the body longer than ``body_idle_s``, the whole request within ``request_s``:
  otherwise 408 and the connection is closed.
- **A connection limit.** Past ``max_connections`` the oldest connection that has not sent a
  whole request gives way to the new one (slow clients cannot lock out a health probe), or the
  new one is answered 503 when all are working; the limit defaults below the open-file limit,
  so ``accept`` never fails for want of a descriptor.
- **Infer and screening on the connection.** An infer or ``/v1/screen`` request runs
  :class:`~edge_agent.service.fastpath.InferHandler` or ``ScreenHandler`` directly instead of
  the ASGI app, and its reply goes out in one ``transport.write``.

Every other request goes to the app unchanged. Where uvicorn's internals are not the ones this
was written against, :func:`http_protocol` says so and uvicorn's own protocol runs (the
FastAPI dependencies still check tokens before bodies are read, without the rest). uvicorn's
httptools protocol is there wherever the agent is: ``uvicorn[standard]`` brings httptools.
"""

from __future__ import annotations

import asyncio
import heapq
import http
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from edge_agent.service.errors import ApiError
from edge_agent.service.fastpath import (
    INFER_PATH,
    SCREEN_PATH,
    InferHandler,
    ScreenHandler,
    error_headers,
)
from edge_agent.service.guard import RequestGate

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
_HOOKS = ("_start_asgi_task", "on_message_begin", "on_headers_complete", "on_body")
_CLOSE = (b"connection", b"close")
_IDLE, _HEADERS, _BODY, _BUSY = range(4)  # where a connection is in its current request
LINGER_S, LINGER_BYTES = 2.0, 8 << 20
"""After refusing a request whose body is still coming, what the agent reads and drops (for
at most this long, this much) before closing: closing with unread data would reset the
connection, and the client could lose the answer."""


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


async def answer_on_connection(
    handler: InferHandler | ScreenHandler, cycle: Any, match: re.Match[str]
) -> None:
    """Answer the request of uvicorn's ``cycle`` with ``handler`` (infer or screening) and
    finish the cycle as uvicorn would."""
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
    handler.metrics.observe(handler.endpoint, status, time.perf_counter() - start)


def _write(
    cycle: Any,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    close: Callable[[], None] | None = None,
) -> None:
    """The whole response in one write, then uvicorn's end-of-response bookkeeping; ``close``
    ends a connection that is not kept alive (default: ``transport.close``)."""
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
        (close or cycle.transport.close)()
    cycle.on_response()


def _raw_reply(status: int, body: bytes, extra: bytes = b"") -> bytes:
    """A whole JSON reply that closes the connection, for a request that has no cycle."""
    return (
        _STATUS[status]
        + b"content-type: application/json\r\nconnection: close\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def _guarded_app(app: Any) -> Any:
    """The AgentApp under uvicorn's wrappers (or ``app`` itself)."""
    seen = 0
    while getattr(app, "gate", None) is None and hasattr(app, "app") and seen < 8:
        app, seen = app.app, seen + 1
    return app


class AgentProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with admission, deadlines, a connection limit, and infer
    and screening answered on the connection (module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        agent = _guarded_app(self.app)
        self.gate: RequestGate | None = getattr(agent, "gate", None)
        self.infer: InferHandler | None = getattr(agent, "infer_handler", None)
        self.screen: ScreenHandler | None = getattr(agent, "screen_handler", None)
        self.phase, self.since, self.started, self.last_byte = _IDLE, time.monotonic(), 0.0, 0.0
        self.reserved = self.draining = 0
        self.admitted: RequestResponseCycle | None = None
        self.pieces: list[bytes] = []
        self.collected = 0
        self.watch: asyncio.TimerHandle | None = None
        if self.gate is None:
            return
        self.watch = self.loop.call_later(self.gate.limits.tick_s, self._check_deadlines)
        if len(self.connections) > self.gate.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.draining:
            self.draining -= len(data)
            if self.draining <= 0:
                self.transport.close()
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase, self.started = _HEADERS, time.monotonic()

    def on_headers_complete(self) -> None:
        self.phase, self.last_byte = _BODY, time.monotonic()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.last_byte = time.monotonic()
        cycle = self.cycle
        if self.reserved and cycle is self.admitted and not cycle.response_complete:
            # the body has its memory reserved already: keep its pieces without uvicorn's
            # pause every 64 KiB, without waking the reader for each and without regrowing
            # one buffer (joined once at the end); past the reservation, uvicorn's handling
            if self.collected + len(body) <= self.reserved:
                self.pieces.append(body)
                self.collected += len(body)
                return
            self._gather(cycle)
        super().on_body(body)

    def _gather(self, cycle: RequestResponseCycle) -> None:
        """Hand the pieces kept by :meth:`on_body` to the cycle, in one buffer."""
        if not self.pieces:
            return
        joined = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        if cycle.body:
            cycle.body += joined
        else:
            cycle.body = joined  # type: ignore[assignment]  # bytes: read, never extended
        self.pieces = []

    def on_message_complete(self) -> None:
        if self.cycle is self.admitted:
            self._gather(self.cycle)
        super().on_message_complete()
        if self.phase == _BODY:  # (a request refused on its headers is answered already)
            self.phase = _BUSY

    def on_response_complete(self) -> None:
        self._release()
        self.phase, self.since = _IDLE, time.monotonic()
        super().on_response_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        scope = cycle.scope
        if self.gate is not None:
            try:
                self.reserved, self.admitted = self.gate.admit(scope), cycle
                self.pieces, self.collected = [], 0
            except ApiError as error:
                self._refuse(cycle, error)
                return
        if scope["method"] == "POST":
            handlers = ((self.infer, INFER_PATH), (self.screen, SCREEN_PATH))
            for handler, path in handlers:
                match = path.fullmatch(scope["path"]) if handler is not None else None
                if handler is not None and match is not None:
                    task = self.loop.create_task(answer_on_connection(handler, cycle, match))
                    task.add_done_callback(self.tasks.discard)
                    self.tasks.add(task)
                    return
        super()._start_asgi_task(cycle, app)

    def _refuse(self, cycle: RequestResponseCycle, error: ApiError) -> None:
        """Answer ``error`` without reading the body; the connection closes (lingering)."""
        cycle.keep_alive = False
        _write(cycle, error.status, error_headers(error), error.body(), close=self._linger)

    def _linger(self) -> None:
        """Close without a reset: stop sending, drop what still arrives, then close."""
        self.draining = LINGER_BYTES
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
        self.flow.resume_reading()

    def _release(self) -> None:
        if self.reserved and self.gate is not None:
            self.gate.release(self.reserved)
        self.reserved = 0

    def _check_deadlines(self) -> None:
        assert self.gate is not None
        limits, now = self.gate.limits, time.monotonic()
        late = None
        if self.phase in (_IDLE, _HEADERS) and now - self.since > limits.header_s:
            if self.phase == _HEADERS or self.timeout_keep_alive_task is None:
                late = f"no complete request headers within {limits.header_s:g} s"
        elif self.phase == _BODY and not self.flow.read_paused:
            if now - self.last_byte > limits.body_idle_s:
                late = f"the request body stalled for over {limits.body_idle_s:g} s"
            elif now - self.started > limits.request_s:
                late = f"the request took over {limits.request_s:g} s to arrive"
        if late is not None:
            self._time_out(late)
        elif not self.transport.is_closing():
            self.watch = self.loop.call_later(limits.tick_s, self._check_deadlines)

    def _time_out(self, reason: str) -> None:
        """Answer 408 to a request under way (none has started to be answered) and close."""
        cycle, body = self.cycle, ApiError(408, f"request timeout: {reason}").body()
        if self.phase == _BODY and cycle is not None and not cycle.response_started:
            cycle.keep_alive = False
            _write(cycle, 408, [(b"content-type", b"application/json")], body)
            cycle.disconnected = True  # the app's task, if one waits for the body, stops
        elif self.phase == _HEADERS:  # no cycle yet for this request
            self.transport.write(_raw_reply(408, body))
        self.transport.close()

    def _make_room(self) -> None:
        """Close the oldest connections still short of a whole request (a sixteenth of the
        limit at once, so that a flood of new ones costs one scan per batch), or refuse this
        one when every connection is working."""
        assert self.gate is not None
        waiting = [
            other
            for other in self.connections
            if other is not self
            and getattr(other, "phase", _BUSY) in (_IDLE, _HEADERS)
            and not other.transport.is_closing()
        ]
        if waiting:
            count = max(1, self.gate.limits.max_connections // 16)
            for other in heapq.nsmallest(count, waiting, key=lambda c: getattr(c, "since", 0.0)):
                other.transport.close()
            return
        body = ApiError(503, "the agent has no room for another connection; retry").body()
        self.transport.write(_raw_reply(503, body, b"retry-after: 1\r\n"))
        self.transport.close()


def http_protocol() -> type[asyncio.Protocol] | str:
    """What to pass as uvicorn's ``http``: :class:`AgentProtocol`, or ``"auto"`` where uvicorn's
    request cycle is not the one this module was written against."""
    fields = inspect.signature(RequestResponseCycle.__init__).parameters
    missing = [f for f in _CYCLE_FIELDS if f not in fields]
    missing += [h for h in _HOOKS if not hasattr(HttpToolsProtocol, h)]
    if missing:
        _log.warning("uvicorn's protocol lacks %s: the agent runs on uvicorn's own", missing)
        return "auto"
    return AgentProtocol


__all__ = ["AgentProtocol", "answer_on_connection", "http_protocol"]
