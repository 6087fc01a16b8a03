"""Camera-size screening through the app: a reduced decode, only the model's square kept, and
a bounded image pool that answers 503 with Retry-After when full while health stays quick."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge_agent.service import AgentConfig
from models.synth import CameraOptions, camera_jpeg, generate, get_site

SIZE = 32


@pytest.fixture(scope="module")
def camera() -> bytes:
    square = generate(get_site("site-a"), 1, size=128, seed=3).images[0]
    return camera_jpeg(square, np.random.default_rng(0), CameraOptions())


def test_a_camera_jpeg_is_screened_from_a_reduced_decode_and_kept_small(
    new_agent: Any, tmp_path: Path, camera: bytes
) -> None:
    config = AgentConfig(max_request_bytes=4 << 20, max_image_bytes=2 << 20, keep_images=True)
    agent = new_agent(tmp_path, config)
    with TestClient(agent.app) as client:
        r = client.post(
            "/v1/screen",
            files={"image": ("eye.jpg", camera, "image/jpeg")},
            headers=agent.headers(),
        )
    assert r.status_code == 200, r.text
    case_id = r.json()["case_id"]
    request = agent.store.get_case(case_id).request
    assert request["pixels"] == [3000, 2250] and request["decoded"] == [375, 282]
    assert request["bytes"] == len(camera)
    assert agent.predictor.calls == [1]
    assert agent.store.case_image(case_id).shape == (SIZE, SIZE, 3)  # the model's square only
    kept = [p.stat().st_size for p in agent.store.cases_dir.iterdir()]
    assert len(kept) == 1 and kept[0] < 16 * 1024


def test_a_full_pool_answers_503_and_health_stays_responsive(
    new_agent: Any,
    tmp_path: Path,
    camera: bytes,
    live: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edge_agent.service.screen as screen

    entered, release = threading.Event(), threading.Event()
    real = screen.prepare_image

    def slow_prepare(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(screen, "prepare_image", slow_prepare)
    config = AgentConfig(
        max_request_bytes=4 << 20, max_image_bytes=2 << 20, screen_workers=1, screen_queue=0
    )
    agent = new_agent(tmp_path, config)
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="e.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + camera
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**agent.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"}

    def post(url: str) -> tuple[int, Any]:
        req = urllib.request.Request(f"{url}/v1/screen", body, headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as reply:
                return reply.status, reply.headers
        except urllib.error.HTTPError as err:
            return err.code, err.headers

    with live(agent.app) as server:
        first: list[int] = []
        worker = threading.Thread(target=lambda: first.append(post(server.url)[0]))
        worker.start()
        try:
            assert entered.wait(20), "the first screening never reached the image pool"
            status, reply_headers = post(server.url)
            assert status == 503 and reply_headers.get("Retry-After") == "1"
            start = time.monotonic()
            with urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=5) as reply:
                assert reply.status == 200
            assert time.monotonic() - start < 2.0  # not stuck behind the busy decode
        finally:
            release.set()
            worker.join(30)
        assert first == [200]
        assert post(server.url)[0] == 200  # the place is free again
