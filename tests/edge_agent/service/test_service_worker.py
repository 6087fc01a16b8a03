"""The agent with its inference worker (ONNX Runtime on the CPU inside, standing in for JetPack's
TensorRT): installed and measured through the worker, served over the connection protocol; the
worker killed under load gives 503s with Retry-After (never 500s), readiness says it is starting,
and it answers again within 10 s."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import LiveServer

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.install import DeviceRoot, install
from edge_agent.runtime import WorkerBackend
from edge_agent.service import AgentConfig
from edge_agent.service.protocol import http_protocol
from edge_agent.service.server import load_agent

pytestmark = pytest.mark.slow
SIZE = 32


@pytest.fixture(scope="module")
def worker_root(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> DeviceRoot:
    work = tmp_path_factory.mktemp("worker-root")
    private, public = generate_keypair(work / "keys", "publisher")
    root = DeviceRoot(work / "root").ensure()
    shutil.copy(public, root.keys.trusted / "publisher.pub")
    bundle = build_bundle(tiny_export, work / "b1.tar", 1, private)
    install(root, bundle)
    return root


def _config() -> AgentConfig:
    return AgentConfig(
        backend="onnxruntime",
        threads=1,
        max_batch=8,
        verify_interval_s=0,
        worker_python=Path(sys.executable),
        worker_backends=("onnxruntime",),
    )


def _infer_body(seed: int) -> dict[str, object]:
    x = np.random.default_rng(seed).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    return {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip


def test_killed_worker_under_load_gives_503s_and_is_back_within_10s(
    worker_root: DeviceRoot,
) -> None:
    agent = load_agent(worker_root.path, _config(), log=print)
    backend = agent.served.batcher.backend
    assert isinstance(backend, WorkerBackend) and backend.kind == "onnxruntime"
    token = agent.store.add_user("tech", "technician")
    name = agent.manifest.name
    statuses: Counter[int] = Counter()
    retry_after: set[str | None] = set()
    stop = threading.Event()

    def client(seed: int, url: str) -> None:
        body = _infer_body(seed)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            while not stop.is_set():
                reply = c.post(f"/v2/models/{name}/infer", json=body, timeout=30)
                statuses[reply.status_code] += 1
                if reply.status_code == 503:
                    retry_after.add(reply.headers.get("retry-after"))

    with LiveServer(agent.app, http=http_protocol(), proxy_headers=False) as server:
        threads = [threading.Thread(target=client, args=(i, server.url)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        served_before = statuses[200]
        old = backend._proc.pid
        killed = time.monotonic()
        backend._proc.proc.kill()
        readiness = []
        with httpx.Client(base_url=server.url) as probe:
            while time.monotonic() - killed < 10.0:
                ready = probe.get("/v2/health/ready")
                readiness.append((ready.status_code, ready.json()))
                if ready.status_code == 200 and backend._proc.pid != old:
                    break
                time.sleep(0.05)
        back = time.monotonic() - killed
        after = statuses[200]
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    agent.store.close()
    assert served_before > 0 and statuses[200] > after, statuses  # served before and after
    assert back < 10.0, readiness[-3:]
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    assert retry_after <= {"1"}
    starting = [body for status, body in readiness if status == 503]
    assert starting and all(b["state"] == "starting" for b in starting), starting
    assert any("restart" in b["progress"] for b in starting)
