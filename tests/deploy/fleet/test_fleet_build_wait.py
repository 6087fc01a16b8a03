"""A canary whose agent answers 503 "starting" (worker starting, engines building) is waited on
up to the plan's build timeout, its progress shown; past it, or in any other not-ready state,
it fails as before. The agent is a small HTTP server on 127.0.0.1 following a timeline."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.fleet import Device, DeviceOps, Inventory, RolloutPlan, TransportSpec, probe, rollout
from deploy.transport import LocalTransport, Transport

Phase = tuple[float, str, str]
"""(seconds, state, progress): "ready", or a not-ready state ("starting", "failed", ...)."""


@dataclass
class FakeAgent:
    """Answers /v2/health/ready along a timeline that starts when ``restart`` is called."""

    version: int = 1
    phases: list[Phase] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def restart(self, version: int, phases: list[Phase]) -> None:
        self.version, self.phases, self.t0 = version, phases, time.monotonic()

    def state(self) -> tuple[str, str]:
        elapsed = time.monotonic() - self.t0
        for seconds, state, progress in self.phases:
            if elapsed < seconds:
                return state, progress
            elapsed -= seconds
        return "ready", ""


def _handler(agent: FakeAgent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = 200, b""
            if self.path == "/v2/health/ready":
                state, progress = agent.state()
                ready = state == "ready"
                answer: dict[str, object] = {"ready": ready}
                if not ready:
                    answer["state"] = state
                if progress:
                    answer["progress"] = progress
                code, body = (200 if ready else 503), json.dumps(answer).encode()
            elif self.path == "/v1/status":
                model = {"name": "tiny", "version": agent.version, "ready": True}
                body = json.dumps({"model": model}).encode()
            elif self.path != "/metrics":
                code = 404
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake_agent() -> Iterator[tuple[FakeAgent, str]]:
    """A fake agent serving on 127.0.0.1 (ready, version 1) and its base URL."""
    agent = FakeAgent()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(agent))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield agent, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@dataclass
class TimelineChange:
    """A rollout change that 'installs' version 2 by restarting the fake agent on a timeline."""

    agent: FakeAgent
    phases: list[Phase]
    artifact: Path = Path("fake-v2.tar")
    kind: str = "bundle"
    _done: set[str] = field(default_factory=set)

    @property
    def target(self) -> str:
        return "2"

    async def current(self, ops: DeviceOps) -> str | None:
        return str(self.agent.version)

    async def apply(self, ops: DeviceOps, before: str | None) -> None:
        self.agent.restart(2, self.phases)
        self._done.add(ops.device.host)

    async def verify(self, ops: DeviceOps) -> None:
        assert await ops.served_version() == 2

    def changed(self, ops: DeviceOps) -> bool:
        return ops.device.host in self._done

    async def revert(self, ops: DeviceOps) -> None:
        self.agent.restart(1, [])
        self._done.discard(ops.device.host)


def _inventory(tmp_path: Path, url: str) -> Inventory:
    inventory = Inventory(tmp_path / "fleet.db")
    spec = TransportSpec(kind="local", root=str(tmp_path), agent="/bin/echo")
    inventory.add(Device(host="xavier", url=url, token="t", transport=spec))
    return inventory


def _local(device: Device) -> Transport:
    return LocalTransport(device.host)


BUILD = [(1.2, "starting", "starting the TensorRT worker"), (1.2, "starting", "fp16 engine 1/2")]


def test_wait_ready_waits_through_starting_and_shows_progress(
    fake_agent: tuple[FakeAgent, str],
) -> None:
    agent, url = fake_agent
    agent.restart(1, BUILD)
    seen: list[str] = []
    took = asyncio.run(probe.wait_ready(url, 0.6, 0.05, build_timeout=30, on_progress=seen.append))
    assert took >= 2.0  # far past the 0.6 s ready timeout: the build was waited on
    assert seen == ["starting the TensorRT worker", "fp16 engine 1/2"]  # each text once


def test_wait_ready_gives_up_past_the_build_timeout(fake_agent: tuple[FakeAgent, str]) -> None:
    agent, url = fake_agent
    agent.restart(1, [(60, "starting", "int8 engine 1/1")])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"still starting after 2s .*int8 engine 1/1"):
        asyncio.run(probe.wait_ready(url, 0.5, 0.05, build_timeout=2))
    assert 1.8 < time.monotonic() - t0 < 6


def test_wait_ready_other_not_ready_states_fail_as_before(
    fake_agent: tuple[FakeAgent, str],
) -> None:
    agent, url = fake_agent
    agent.restart(1, [(60, "failed", "engine build failed: out of memory")])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="not ready within"):
        asyncio.run(probe.wait_ready(url, 0.5, 0.05, build_timeout=30))
    assert time.monotonic() - t0 < 3  # the build timeout is not granted to a failed agent


def test_rollout_waits_for_a_building_canary_and_through_a_rebuild_in_the_soak(
    fake_agent: tuple[FakeAgent, str], tmp_path: Path
) -> None:
    agent, url = fake_agent
    inventory = _inventory(tmp_path, url)
    # engines build (2.4 s), the agent serves for 0.4 s, then its worker restarts and rebuilds
    phases = [*BUILD, (0.4, "ready", ""), (1.5, "starting", "int8 engine rebuild")]
    plan = RolloutPlan(soak_s=0.8, check_interval_s=0.1, ready_timeout_s=0.6, build_timeout_s=30)
    events: list[tuple[str, str]] = []
    result = asyncio.run(
        rollout(inventory, TimelineChange(agent, phases), plan, conn=_local,
                on=lambda h, t: events.append((h, t)))
    )  # fmt: skip
    assert result.status == "succeeded", (result.summary, result.hosts, events)
    [host] = result.hosts
    assert (host.stage, host.result) == ("canary", "updated")
    texts = [t for h, t in events if h == "xavier"]
    assert "canary: starting: fp16 engine 1/2" in texts
    assert "soak: starting: int8 engine rebuild" in texts  # the soak waited, did not fail
    assert result.seconds is not None and result.seconds >= 2.4 + 0.4 + 1.5 - 0.2


def test_rollout_fails_a_canary_still_building_past_the_timeout(
    fake_agent: tuple[FakeAgent, str], tmp_path: Path
) -> None:
    agent, url = fake_agent
    inventory = _inventory(tmp_path, url)
    phases: list[Phase] = [(60, "starting", "fp16 engine 1/2")]
    plan = RolloutPlan(soak_s=0.5, check_interval_s=0.1, ready_timeout_s=0.5, build_timeout_s=2)
    result = asyncio.run(rollout(inventory, TimelineChange(agent, phases), plan, conn=_local))
    assert result.status == "rolled back", result.summary
    [host] = result.hosts
    assert host.result == "rolled back"
    assert "still starting after 2s" in (host.error or "") and "fp16 engine 1/2" in (
        host.error or ""
    )
    assert agent.version == 1


def test_plan_refuses_a_build_timeout_shorter_than_the_ready_timeout() -> None:
    with pytest.raises(ValueError, match="build_timeout_s"):
        RolloutPlan(ready_timeout_s=120, build_timeout_s=60)
