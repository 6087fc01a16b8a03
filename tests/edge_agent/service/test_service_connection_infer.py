"""Infer answered on the connection (edge_agent.service.protocol) by a real uvicorn server in
front of the real dynamic batcher: concurrent one-image requests share batches, each reply goes
to its own requester, a bad request fails alone, and HTTP details (keep-alive, close, 401, 413,
gzip, other routes) behave as through ASGI."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SIZE, LiveServer

from edge_agent.runtime import BatcherSettings, DynamicBatcher, Outputs, create_backend
from edge_agent.runtime.backend import Backend, register_backend
from edge_agent.service import AgentConfig, ScreeningSettings, create_app
from edge_agent.service import protocol as protocol_module
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.protocol import http_protocol
from edge_agent.service.served import ServedModel, model_info
from edge_agent.store import Store
from models.preprocess import PreprocessSpec

CLIENTS = 8


@register_backend("test-connection-echo")
class Echo(Backend):
    """Answers each image's first pixel as its quality logit; records its batch sizes."""

    def __init__(self, model_path: Path, precision: str, *, image_size: int) -> None:
        super().__init__(model_path, precision, image_size)
        self.batches: list[int] = []

    def _run(self, images: np.ndarray) -> Outputs:
        self.batches.append(len(images))
        first = images[:, 0, 0, 0].astype(np.float32)
        return Outputs(np.repeat(first[:, None], 5, 1), first[:, None].copy())


def _served(tmp_path: Path, wait_ms: float) -> tuple[Any, Echo, str, AgentMetrics]:
    backend = create_backend("test-connection-echo", Path("none"), "fp32", image_size=SIZE)
    assert isinstance(backend, Echo)
    metrics = AgentMetrics()
    batcher = DynamicBatcher(
        backend,
        BatcherSettings(max_batch=CLIENTS, max_wait_ms=wait_ms, check_finite=False),
        on_batch=lambda rows, _s: metrics.observe_batch(rows),
    )
    served = ServedModel(model_info("echo", 1, backend), batcher)
    store = Store(tmp_path / "state.db")
    token = store.add_user("tech-1", "technician")
    settings = ScreeningSettings(spec=PreprocessSpec(size=SIZE), referral_threshold=0.5)
    config = AgentConfig(max_request_bytes=1 << 20)
    app = create_app(served, store, store, settings, config, metrics=metrics)
    return app, backend, token, metrics


def _body(value: float, rows: int = 1, shape: tuple[int, ...] | None = None) -> tuple[bytes, int]:
    x = np.full(shape or (rows, 3, SIZE, SIZE), value, np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + x.tobytes(), len(header)


def _post(
    conn: http.client.HTTPConnection, body: bytes, header_length: int, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    sent = {"Inference-Header-Content-Length": str(header_length), **headers}
    conn.request("POST", "/v2/models/echo/infer", body, sent)
    reply = conn.getresponse()
    return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()


def _quality(headers: dict[str, str], data: bytes) -> list[float]:
    length = int(headers["inference-header-content-length"])
    outputs = json.loads(data[:length])["outputs"]
    offset = length
    for out in outputs:
        size = out["parameters"]["binary_data_size"]
        if out["name"] == "gradable_logit":
            return np.frombuffer(data[offset : offset + size], np.float32).tolist()
        offset += size
    raise AssertionError(f"no gradable_logit in {outputs}")


def test_the_installed_uvicorn_gets_the_connection_protocol() -> None:
    assert not isinstance(http_protocol(), str)


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, backend, token, metrics = _served(tmp_path, wait_ms=200)
    answered: list[int] = []
    original = protocol_module.answer_on_connection

    async def counted(*args: Any) -> None:
        answered.append(1)
        await original(*args)

    monkeypatch.setattr(protocol_module, "answer_on_connection", counted)
    auth = {"Authorization": f"Bearer {token}"}
    bad = {3: (float("nan"), None), 5: (1.0, (1, 3, SIZE, SIZE + 1))}  # NaN; wrong shape
    barrier = threading.Barrier(CLIENTS)

    def client(i: int, port: int) -> tuple[int, Any]:
        value, shape = bad.get(i, (float(i), None))
        body, length = _body(value, shape=shape)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            barrier.wait()
            status, headers, data = _post(conn, body, length, **auth)
        finally:
            conn.close()
        return status, _quality(headers, data) if status == 200 else json.loads(data)

    with LiveServer(app, http=http_protocol(), proxy_headers=False) as server:
        with ThreadPoolExecutor(CLIENTS) as pool:
            replies = list(pool.map(lambda i: client(i, server.port), range(CLIENTS)))
        rendered = metrics.render().decode()
    for i, (status, answer) in enumerate(replies):
        if i == 3:
            assert status == 400 and "NaN" in answer["error"]
        elif i == 5:
            assert status == 400 and "shape" in answer["error"]
        else:
            assert (status, answer) == (200, [float(i)])
    assert sum(backend.batches) == CLIENTS - len(bad)
    assert max(backend.batches) > 1, backend.batches
    assert len(answered) == CLIENTS  # none of them went through the ASGI app
    count = re.search(r"^fovea_batch_size_count (\S+)", rendered, re.M)
    assert count is not None and float(count.group(1)) == len(backend.batches)
    assert 'fovea_requests_total{endpoint="infer",status="200"} 6.0' in rendered
    assert 'fovea_errors_total{endpoint="infer",kind="client"} 2.0' in rendered


def test_http_details_on_the_connection(tmp_path: Path) -> None:
    app, _, token, _ = _served(tmp_path, wait_ms=0)
    auth = {"Authorization": f"Bearer {token}"}
    body, length = _body(2.0, rows=2)
    with LiveServer(app, http=http_protocol(), proxy_headers=False) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for value in (1.0, 2.0):  # keep-alive: two requests, one connection
            one, one_length = _body(value)
            status, headers, data = _post(conn, one, one_length, **auth)
            assert status == 200 and _quality(headers, data) == [value]
            assert headers["content-type"] == "application/octet-stream"
            assert "date" in headers and headers["content-length"] == str(len(data))
        status, headers, data = _post(conn, body, length)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert "bearer token" in json.loads(data)["error"]
        status, headers, data = _post(
            conn, gzip.compress(body), length, **auth, **{"Content-Encoding": "gzip"}
        )
        assert status == 200 and _quality(headers, data) == [2.0, 2.0]
        status, _, data = _post(conn, b"x" * (2 << 20), 10, **auth)
        assert status == 413 and "limit" in json.loads(data)["error"]
        conn.close()

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        status, headers, _ = _post(conn, body, length, **auth, Connection="close")
        assert status == 200 and headers["connection"] == "close"
        conn.close()

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/v2/models/echo", headers=auth)  # other routes: the ASGI app
        reply = conn.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["name"] == "echo"
        conn.request("POST", "/v2/models/other/infer", body, auth)
        reply = conn.getresponse()
        assert reply.status == 404 and "other" in json.loads(reply.read())["error"]
        conn.close()
