"""Flashing a local device root (LocalTransport): the whole path, idempotent re-runs, dry-run."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.flash import FlashTarget, ProcessSupervisor, ServiceSpec, flash
from deploy.transport import LocalTransport


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def local_target(tmp_path: Path) -> Iterator[FlashTarget]:
    target = FlashTarget(
        LocalTransport("dev-local"), str(tmp_path / "root"), str(tmp_path / "opt"), free_port()
    )
    yield target
    stop_agent(target)


def stop_agent(target: FlashTarget) -> None:
    import asyncio

    spec = ServiceSpec("fovea-agent", ("true",), target.root, target.prefix)
    asyncio.run(ProcessSupervisor(LocalTransport(target.host), spec).stop())


def status(url: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/v1/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read()))


@pytest.mark.slow
def test_flash_local_then_rerun_is_idempotent(
    make_plan: Callable[..., Any], local_target: FlashTarget
) -> None:
    plan = make_plan()
    [first] = flash([local_target], plan)
    assert first.status == "flashed", first.error
    assert first.token and first.supervisor == "process" and first.model_version == 1
    assert status(first.url or "", first.token)["model"]
    [again] = flash([local_target], plan)
    assert again.status == "unchanged", (again.error, again.steps)
    assert again.token is None  # the existing account is kept
    assert status(first.url or "", first.token)["model"]  # the first token still works


def test_flash_dry_run_prints_plan_and_touches_nothing(
    make_plan: Callable[..., Any], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from server.cli import app

    plan = make_plan()
    root = tmp_path / "dev"
    args = ["flash", f"local:{root}", "--bundle", str(plan.bundle), "--key",
            str(plan.trusted_key), "--agent-venv", plan.agent_venv, "--dry-run"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "fovea-agent install" in res.output and "dry run" in res.output
    assert not root.exists()
