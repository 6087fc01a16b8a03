"""The connection guard (edge_agent.service.protocol + guard) on a real uvicorn server: refusals
on the headers before any body is read, 408 for slow or stalled clients, room made for new
connections past the limit, the memory budget for bodies in flight, and heavy parsing off the
event loop."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SIZE, LiveServer, fundus_png, make_agent
from fastapi.testclient import TestClient

from edge_agent.service import AgentConfig
from edge_agent.service.fastpath import InferHandler
from edge_agent.service.protocol import http_protocol

SCREEN_HEADERS = "Content-Type: multipart/form-data; boundary=b\r\n"


def _serve(tmp_path: Path, **settings: Any) -> tuple[Any, LiveServer]:
    config = AgentConfig(**{"max_request_bytes": 4 << 20, "max_image_bytes": 2 << 20, **settings})
    agent = make_agent(tmp_path, config)
    return agent, LiveServer(agent.app, http=http_protocol(), proxy_headers=False)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(method: str, path: str, length: int | None, extra: str = "") -> bytes:
    size = "" if length is None else f"Content-Length: {length}\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{size}{extra}\r\n".encode()


def _reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body of one reply, and whether the server then closed the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a reply: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    sock.settimeout(3)
    try:
        closed = sock.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        closed = False
    return int(lines[0].split()[1]), headers, body, closed


def _health(port: int) -> int:
    sock = _connect(port)
    try:
        sock.sendall(_head("GET", "/v2/health/live", None))
        return _reply(sock)[0]
    finally:
        sock.close()


def test_refusals_come_on_the_headers_before_the_body(tmp_path: Path) -> None:
    agent, server = _serve(tmp_path)
    token = agent.tokens["technician"]
    with server:
        cases = [  # (request head, status): 1 KiB of a declared 3 MiB body is ever sent
            (_head("POST", "/v1/screen", 3 << 20, SCREEN_HEADERS), 401),
            (_head("POST", "/v1/screen", 3 << 20, "Authorization: Bearer nope\r\n"), 401),
            (
                _head(
                    "POST",
                    "/v1/cases/x/review",
                    3 << 20,
                    f"Authorization: Bearer {token}\r\n",
                ),
                403,  # a technician may not review
            ),
            (_head("POST", "/v1/screen", 5 << 20, f"Authorization: Bearer {token}\r\n"), 413),
            (_head("POST", "/v2/models/fovea-student/infer", 5 << 20, ""), 401),
            (_head("POST", "/nowhere", 3 << 20, f"Authorization: Bearer {token}\r\n"), 404),
        ]
        for head, expected in cases:
            sock = _connect(server.port)
            sock.sendall(head + b"x" * 1024)
            start = time.monotonic()
            status, headers, body, closed = _reply(sock)
            sock.close()
            assert status == expected, (head, body)
            assert time.monotonic() - start < 2.0  # answered without waiting for the body
            assert closed and headers["connection"] == "close"
            assert "error" in json.loads(body)
        assert agent.app.gate.budget.used == 0


def test_a_refused_upload_still_gets_its_answer_while_sending(tmp_path: Path) -> None:
    _, server = _serve(tmp_path)
    with server:
        sock = _connect(server.port)
        sock.sendall(_head("POST", "/v1/screen", 3 << 20, SCREEN_HEADERS))
        try:
            sock.sendall(b"x" * (3 << 20))  # the server reads and drops it: no reset
        except (BrokenPipeError, ConnectionResetError):
            pytest.fail("the connection was reset while the client was still sending")
        status, _, _, closed = _reply(sock)
        sock.close()
    assert status == 401 and closed


def test_slow_or_stalled_clients_get_408_and_are_closed(tmp_path: Path) -> None:
    agent, server = _serve(
        tmp_path, header_timeout_s=0.6, body_timeout_s=0.6, request_timeout_s=1.5
    )
    auth = f"Authorization: Bearer {agent.tokens['clinician']}\r\n"
    with server:
        silent = _connect(server.port)  # connects and never sends
        slow_head = _connect(server.port)
        slow_head.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # never ends
        stalled = _connect(server.port)
        stalled.sendall(_head("POST", "/v1/cases/x/review", 100, auth) + b'{"grade": ')
        trickle = _connect(server.port)
        trickle.sendall(_head("POST", "/v1/cases/x/review", 100, auth))
        start = time.monotonic()
        for _ in range(10):  # a byte every 0.3 s: never idle 0.6 s, but 1.5 s in all is up
            time.sleep(0.3)
            try:
                trickle.sendall(b" ")
            except OSError:
                break
        for sock, expected in ((slow_head, 408), (stalled, 408), (trickle, 408)):
            status, _, body, closed = _reply(sock)
            assert status == expected and closed, body
            assert "request timeout" in json.loads(body)["error"]
        assert time.monotonic() - start < 5.0
        silent.settimeout(5)
        assert silent.recv(1) == b""  # closed without a word: it never asked anything
        assert _health(server.port) == 200


def test_past_the_connection_limit_the_oldest_waiting_connection_gives_way(
    tmp_path: Path,
) -> None:
    _, server = _serve(tmp_path, max_connections=8)
    with server:
        idle = [_connect(server.port) for _ in range(20)]
        time.sleep(0.3)
        assert _health(server.port) == 200  # the probe got in
        closed = 0
        for sock in idle:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                closed += sock.recv(1) == b""
            sock.close()
    assert closed >= 12  # at most 8 were ever open at once; the oldest went first


def test_bodies_in_flight_are_held_to_the_memory_budget(tmp_path: Path) -> None:
    agent, server = _serve(tmp_path, memory_budget_mb=16, max_image_bytes=7 << 20)
    head = _head(
        "POST",
        "/v1/screen",
        10 << 20,
        f"Authorization: Bearer {agent.tokens['technician']}\r\n{SCREEN_HEADERS}",
    )
    with server:
        first = _connect(server.port)
        part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="e.jpg"\r\n\r\n'
        first.sendall(head + part + b"x" * 1024)  # admitted: 10 MiB of the 16 held for it
        time.sleep(0.3)
        assert agent.app.gate.budget.used == 10 << 20
        second = _connect(server.port)
        second.sendall(head)
        status, headers, _, _ = _reply(second)
        assert status == 503 and headers["retry-after"] == "1"
        first.close()  # the client gives up: its reservation goes back
        deadline = time.monotonic() + 5
        while agent.app.gate.budget.used and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.app.gate.budget.used == 0


def test_compressed_and_large_json_bodies_are_parsed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = InferHandler._parse

    def spy(self: InferHandler, *args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(self, *args)

    monkeypatch.setattr(InferHandler, "_parse", spy)
    agent, server = _serve(tmp_path)
    x = np.full((1, 3, SIZE, SIZE), 0.5, np.float32)
    request = {
        "inputs": [
            {"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}
        ]
    }
    body = gzip.compress(json.dumps(request).encode())
    auth = f"Authorization: Bearer {agent.tokens['technician']}\r\n"
    with server:
        sock = _connect(server.port)
        extra = f"{auth}Content-Encoding: gzip\r\nContent-Type: application/json\r\n"
        sock.sendall(_head("POST", "/v2/models/fovea-student/infer", len(body), extra) + body)
        status, _, reply, _ = _reply(sock)
        sock.close()
    assert status == 200, reply
    assert threads and threads[0].startswith("parse")


def test_screening_on_the_connection_answers_as_the_app_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.client

    from edge_agent.service.fastpath import ScreenHandler

    answered: list[int] = []
    real = ScreenHandler.reply

    async def counted(self: ScreenHandler, *args: Any) -> Any:
        reply = await real(self, *args)
        answered.append(reply[0])
        return reply

    monkeypatch.setattr(ScreenHandler, "reply", counted)
    agent, server = _serve(tmp_path)
    image = fundus_png(seed=4)
    form = (
        b'--b\r\nContent-Disposition: form-data; name="left"; filename="l.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image + b"\r\n--b--\r\n"
    )
    bad = form.replace(b'name="left"', b'name="nose"')
    headers = {**agent.headers(), "Content-Type": "multipart/form-data; boundary=b"}
    with server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        replies = []
        for body in (form, bad):
            conn.request("POST", "/v1/screen", body, headers)
            reply = conn.getresponse()
            replies.append((reply.status, json.loads(reply.read())))
        conn.close()
    with TestClient(agent.app) as client:
        through_app = [client.post("/v1/screen", content=b, headers=headers) for b in (form, bad)]
    assert answered == [200, 400]  # both went through the connection's handler
    (status, fast), (bad_status, fast_error) = replies
    assert status == through_app[0].status_code == 200
    assert bad_status == through_app[1].status_code == 400
    assert fast_error == through_app[1].json() and "nose" in fast_error["error"]
    slow = through_app[0].json()
    assert fast["case_id"] != slow["case_id"]
    for key in ("patient", "model", "referral_threshold"):
        assert fast[key] == slow[key]
    assert [e["eye"] for e in fast["eyes"]] == ["left"]
    assert agent.store.get_case(fast["case_id"]) is not None


def test_a_chunked_body_is_held_to_its_limit(tmp_path: Path) -> None:
    agent, server = _serve(tmp_path)  # infer bodies: 4 MiB at most
    head = (
        "POST /v2/models/fovea-student/infer HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {agent.tokens['technician']}\r\n"
        "Inference-Header-Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n"
    with server:
        sock = _connect(server.port)
        sock.sendall(head)
        with contextlib.suppress(OSError):
            for _ in range(6):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        status, _, body, _ = _reply(sock)
        sock.close()
    assert status == 413 and "limit" in json.loads(body)["error"]
    assert agent.app.gate.budget.used == 0
