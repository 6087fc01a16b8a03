"""While the model loads (engines building, the worker starting) the agent listens already:
live, not ready with its progress, everything else 503 with Retry-After; then the agent's app
and its lifespan take over; a failed load stops the server and keeps the error."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
from conftest import LiveServer
from fastapi import FastAPI

from edge_agent.service.starting import StartingApp


def _app(events: list[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        events.append("started")
        yield
        events.append("stopped")

    app = FastAPI(lifespan=lifespan)

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def test_readiness_shows_progress_until_the_agent_takes_over() -> None:
    release, events, stopped = threading.Event(), [], []

    def load(note: Any) -> Any:
        note("building the fp16 engine 1 of 2 (batch 1-32); this takes minutes")
        release.wait(20)
        return SimpleNamespace(app=_app(events))

    starting = StartingApp(load, lambda: stopped.append(True), log=lambda s: None)
    with LiveServer(starting) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        deadline = time.monotonic() + 10
        while "engine" not in (ready := client.get("/v2/health/ready")).text:
            assert time.monotonic() < deadline
        assert ready.status_code == 503
        assert (
            ready.json()["state"] == "starting" and "fp16 engine 1 of 2" in ready.json()["progress"]
        )
        infer = client.post("/v2/models/m/infer", json={})
        assert infer.status_code == 503 and infer.headers["retry-after"] == "5"
        assert "starting" in infer.json()["error"]
        release.set()
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert events == ["started"]  # the agent's lifespan ran once it was loaded
    assert events == ["started", "stopped"] and not stopped


def test_a_failed_load_stops_the_server_and_keeps_the_error() -> None:
    def load(note: Any) -> Any:
        raise ValueError("no precision of tiny-dr could be loaded")

    stopped = threading.Event()
    starting = StartingApp(load, stopped.set, log=lambda s: None)
    with LiveServer(starting) as server:
        assert stopped.wait(10)
        with httpx.Client(base_url=server.url) as client:
            body = client.get("/v2/health/ready").json()
    assert isinstance(starting.error, ValueError)
    assert "failed to load: no precision" in body["progress"]
