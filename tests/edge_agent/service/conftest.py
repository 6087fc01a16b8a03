"""Fixtures for the service tests: a fake model and store, the app, and a real uvicorn server."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from edge_agent.service import AgentConfig, ModelInfo, ScreeningSettings, TensorInfo, create_app
from edge_agent.store import Store
from models.preprocess import PreprocessSpec

SIZE = 32


class FakePredictor:
    """A deterministic stand-in model: logits are simple functions of each image's mean."""

    def __init__(self, size: int = SIZE) -> None:
        self._info = ModelInfo(
            name="fovea-student",
            version=3,
            inputs=(TensorInfo("images", "FP32", (-1, 3, size, size)),),
            outputs=(
                TensorInfo("grade_logits", "FP32", (-1, 5)),
                TensorInfo("gradable_logit", "FP32", (-1, 1)),
            ),
            max_request_rows=8,
        )
        self.calls: list[int] = []

    @property
    def info(self) -> ModelInfo:
        return self._info

    def ready(self) -> bool:
        return True

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(len(images))
        return expected_outputs(images)


def expected_outputs(images: np.ndarray) -> dict[str, np.ndarray]:
    """What FakePredictor answers for ``images``."""
    m = images.reshape(len(images), -1).mean(axis=1).astype(np.float32)
    grades = np.stack([m * k for k in (1.0, -1.0, 0.5, 0.0, -0.5)], axis=1).astype(np.float32)
    return {"grade_logits": grades, "gradable_logit": (m[:, None] * 0 + 4.0).astype(np.float32)}


@dataclass
class Agent:
    """An app with its fakes and one token per role."""

    app: FastAPI
    predictor: FakePredictor
    store: Store
    tokens: dict[str, str]

    def headers(self, role: str = "technician") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def make_agent(directory: Path, config: AgentConfig | None = None) -> Agent:
    """A fresh app over a FakePredictor and a real Store in ``directory``."""
    predictor = FakePredictor()
    store = Store(directory / "state.db")
    tokens = {
        role: store.add_user(f"{role}-1", role) for role in ("technician", "clinician", "admin")
    }
    settings = ScreeningSettings(spec=PreprocessSpec(size=SIZE), referral_threshold=0.3)
    app = create_app(
        predictor,
        store,
        store,
        settings,
        config or AgentConfig(max_request_bytes=4 << 20, max_image_bytes=2 << 20),
        telemetry=lambda: {"cpu": {"percent": 12.5}, "memory": {"used_bytes": 1024}},
        status_extra=lambda: {"precision_choice": {"chosen": {"precision": "fp32"}}},
    )
    return Agent(app, predictor, store, tokens)


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    """A fresh agent app."""
    return make_agent(tmp_path)


@pytest.fixture
def client(agent: Agent) -> Iterator[TestClient]:
    """An in-process HTTP client of ``agent`` (server errors come back as 500s, not raised)."""
    with TestClient(agent.app, raise_server_exceptions=False) as c:
        yield c


def fundus_png(seed: int = 0, size: int = 96) -> bytes:
    """A synthetic fundus photograph as PNG bytes."""
    from models.synth.generator import generate
    from models.synth.profiles import get_site

    image = generate(get_site("site-a"), 1, size=size, seed=seed).images[0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server on 127.0.0.1 in a background thread."""

    def __init__(self, app: FastAPI, **options: Any) -> None:
        self.port = free_port()
        self.scheme = "https" if options.get("ssl_certfile") else "http"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def new_agent() -> type[Agent] | Any:
    """The ``make_agent`` factory (for tests that need their own configuration)."""
    return make_agent


@pytest.fixture
def fundus() -> Any:
    """The ``fundus_png`` maker."""
    return fundus_png


@pytest.fixture
def live() -> Any:
    """The LiveServer class: ``with live(app) as server: ... server.url``."""
    return LiveServer


@pytest.fixture
def expected() -> Any:
    """``expected_outputs``: what the fake model answers."""
    return expected_outputs
