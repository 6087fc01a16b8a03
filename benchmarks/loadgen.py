"""A small HTTP/1.1 load generator: asyncio keep-alive connections, closed or open loop.

Fast enough not to be the bottleneck on one core (``generator_capacity`` measures it against
a server that does no work): requests are prebuilt bytes and responses are parsed only for
their status line and Content-Length.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


@dataclass
class LoadResult:
    """What one load phase saw inside its measured window."""

    seconds: float
    ok: int = 0
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds

    def summary(self) -> dict[str, Any]:
        """JSON form: rate, counts, latency percentiles."""
        lat = np.asarray(self.latencies_ms or [np.nan])
        return {
            "requests_per_s": round(self.rate, 1),
            "ok": self.ok,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "seconds": round(self.seconds, 2),
        }


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, gen: _Generator) -> None:
        self.gen, self.buf, self.sent_at = gen, b"", 0.0
        self.transport: asyncio.Transport | None = None
        self.busy, self.closed = False, False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.sent_at, self.busy = scheduled, True
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        match = _CONTENT_LENGTH.search(self.buf, 0, end)
        total = end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buf) < total:
            return
        status = int(self.buf[9:12])
        self.buf, self.busy = self.buf[total:], False
        self.gen.done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.gen.idle:
            self.gen.idle.remove(self)
        if self.busy:
            self.busy = False
            if self.buf:  # the server went away in the middle of its answer
                self.gen.done(self, 0)
            else:  # it closed an idle keep-alive connection as the request left: send it again
                self.gen.resend(self.sent_at)  # on another one, as HTTP clients do
        self.gen.lost += 1


class _Generator:
    """Closed loop (``rate`` None: each connection resends at once) or open loop at ``rate``."""

    def __init__(self, request: bytes, window: tuple[float, float], rate: float | None) -> None:
        self.request, self.window, self.rate = request, window, rate
        self.result = LoadResult(window[1] - window[0])
        self.idle: list[_Conn] = []
        self.backlog: deque[float] = deque()
        self.in_flight, self.lost = 0, 0
        self.drained = asyncio.get_running_loop().create_future()

    def start(self, conn: _Conn, scheduled: float) -> None:
        self.in_flight += 1
        conn.send(scheduled)

    def done(self, conn: _Conn, status: int) -> None:
        now = time.perf_counter()
        self.in_flight -= 1
        if self.window[0] <= conn.sent_at and now <= self.window[1] + 5.0:
            self.result.statuses[status] += 1
            if status == 200:
                self.result.ok += now <= self.window[1]
                self.result.latencies_ms.append((now - conn.sent_at) * 1e3)
            else:
                self.result.failed += 1
        if status == 0:  # the connection is gone
            pass
        elif now < self.window[1] and self.rate is None:
            return self.start(conn, now)
        elif self.backlog:  # scheduled inside the window: still sent, even if late
            return self.start(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)
        if now >= self.window[1]:
            self.finish()

    def finish(self) -> None:
        if self.in_flight == 0 and not self.drained.done():
            self.drained.set_result(None)

    def dispatch(self, scheduled: float) -> None:
        if self.idle:
            self.start(self.idle.pop(), scheduled)
        else:
            self.backlog.append(scheduled)

    def resend(self, scheduled: float) -> None:
        """A request whose connection the server closed before answering goes out again."""
        self.in_flight -= 1
        if self.idle:
            self.start(self.idle.pop(), scheduled)
        else:
            self.backlog.appendleft(scheduled)


async def _load(
    port: int, request: bytes, conns: int, warmup: float, seconds: float, rate: float | None
) -> LoadResult:
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + warmup
    gen = _Generator(request, (start, start + seconds), rate)
    made = [
        await loop.create_connection(lambda: _Conn(gen), "127.0.0.1", port) for _ in range(conns)
    ]
    protocols = [p for _, p in made]
    if rate is None:
        for p in protocols:
            gen.start(p, time.perf_counter())
    else:
        gen.idle.extend(protocols)
        t0, n = time.perf_counter(), 0
        while (due := t0 + n / rate) < start + seconds:
            if due > (now := time.perf_counter()):
                await asyncio.sleep(due - now)
                continue
            gen.dispatch(due)
            n += 1
    await asyncio.sleep(max(0.0, start + seconds - time.perf_counter()))
    gen.finish()
    try:
        await asyncio.wait_for(gen.drained, timeout=start + seconds + 30 - time.perf_counter())
    except TimeoutError:
        gen.result.failed += gen.in_flight  # requests never answered
    for transport, _ in made:
        transport.close()
    gen.result.failed += len(gen.backlog)
    return gen.result


def run_load(
    port: int,
    request: bytes,
    *,
    seconds: float,
    conns: int = 16,
    rate: float | None = None,
    warmup: float = 1.0,
    core: int = 0,
) -> LoadResult:
    """Send ``request`` to 127.0.0.1:``port`` from ``core``; closed loop unless ``rate``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        return asyncio.run(_load(port, request, conns, warmup, seconds, rate))
    finally:
        os.sched_setaffinity(0, before)


def http_request(path: str, body: bytes, content_type: str, token: str, extra: str = "") -> bytes:
    """A whole POST request with a bearer token; ``extra`` holds further header lines."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _echo_server(port: int, core: int) -> None:
    """A trivial HTTP server on core 1: answers every request with 200 and no work."""
    os.sched_setaffinity(0, {core})

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                match = _CONTENT_LENGTH.search(self.buf, 0, end)
                total = end + 4 + (int(match.group(1)) if match else 0)
                if len(self.buf) < total:
                    return
                self.buf = self.buf[total:]
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def generator_capacity(
    request: bytes, seconds: float, *, core: int = 0, server_core: int = 1
) -> float:
    """Requests/s the generator reaches against a server that does nothing."""
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(
        target=_echo_server, args=(port, server_core)
    )
    proc.start()
    try:
        for _ in range(500):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.01)
        return run_load(port, request, seconds=seconds, warmup=0.5, core=core).rate
    finally:
        proc.terminate()
        proc.join()


__all__ = ["LoadResult", "free_port", "generator_capacity", "http_request", "run_load"]
