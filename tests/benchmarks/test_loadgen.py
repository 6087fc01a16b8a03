"""The load generator counts what the server did, not what keep-alive timing did to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from benchmarks.loadgen import free_port, http_request, run_load


def _serve(port: int, ready: threading.Event, stop: threading.Event) -> None:
    """Answers the first request on a connection, then closes it when the next one arrives,
    unanswered: as a server whose keep-alive timeout fires just as a request is sent."""

    class OneShot(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport, self.served = transport, 0

        def data_received(self, data: bytes) -> None:
            if self.served:
                self.transport.close()
                return
            self.served += 1
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(OneShot, "127.0.0.1", port)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())


@pytest.fixture
def one_shot_server() -> Iterator[int]:
    port, ready, stop = free_port(), threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve, args=(port, ready, stop), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    stop.set()
    thread.join(10)


def test_a_request_on_a_connection_closed_as_it_left_goes_out_again(one_shot_server: int) -> None:
    request = http_request("/x", b"{}", "application/json", "t")
    # 12 paced requests over 16 connections: every connection the server closes under a request
    # is replaced by a fresh one from the pool, so all 12 are answered
    result = run_load(one_shot_server, request, seconds=1.2, conns=16, rate=10.0, warmup=0.2)
    assert result.failed == 0, result.summary()
    assert result.statuses[200] >= 10, result.summary()
