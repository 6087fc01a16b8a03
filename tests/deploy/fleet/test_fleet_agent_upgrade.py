"""Agent upgrades end to end: a device flashed from a real fovea-edge wheel into its own venv, an
upgrade canary that succeeds, then a broken agent wheel that is rolled back to the previous one.

Three wheels of this source tree are built (versions 0.1.1, 0.1.2 and a 0.1.3 whose ``serve``
exits at once) from copies with the version changed in pyproject.toml; the device's venv gets
them from a wheelhouse of the agent's dependencies made with ``pip download``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.flash import (
    FlashPlan,
    FlashTarget,
    ProcessSupervisor,
    ServiceSpec,
    build_wheel,
    flash,
    make_wheelhouse,
)
from deploy.fleet import AgentChange, Device, Inventory, RolloutPlan, TransportSpec, rollout
from deploy.transport import LocalTransport
from server.cli.fleet import fleet_app

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[3]
_SERVE = "    from edge_agent.service import serve as run\n"
_BROKEN = '    raise SystemExit("fovea-agent serve: this build is broken on purpose")\n'


@dataclass(frozen=True)
class AgentWheels:
    """fovea-edge wheels of three versions (the last cannot serve) and their wheelhouse."""

    old: Path
    new: Path
    broken: Path
    wheelhouse: Path


def _wheel(version: str, out: Path, *, broken: bool = False) -> Path:
    src = out / f"src-{version}"
    for package in ("models", "server", "edge_agent", "deploy"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(PROJECT / package, src / package, ignore=ignore)
    shutil.copy(PROJECT / "README.md", src / "README.md")
    text = (PROJECT / "pyproject.toml").read_text()
    versioned = re.sub(r'(?m)^version = "[^"]+"$', f'version = "{version}"', text, count=1)
    assert versioned != text, "pyproject.toml has no version line to change"
    (src / "pyproject.toml").write_text(versioned)
    if broken:
        cli = src / "edge_agent" / "cli.py"
        assert _SERVE in cli.read_text(), "the serve command changed; update this test's patch"
        cli.write_text(cli.read_text().replace(_SERVE, _BROKEN))
    return build_wheel(src, out / f"wheel-{version}")


@pytest.fixture(scope="module")
def agent_wheels(tmp_path_factory: pytest.TempPathFactory) -> AgentWheels:
    """The three wheels (built from copies of this tree) and the agent's dependency wheels."""
    out = tmp_path_factory.mktemp("agent-wheels")
    old = _wheel("0.1.1", out)
    return AgentWheels(
        old=old,
        new=_wheel("0.1.2", out),
        broken=_wheel("0.1.3", out, broken=True),
        wheelhouse=make_wheelhouse(old, out / "wheelhouse"),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _agent_version(target: FlashTarget) -> str:
    done = subprocess.run(
        [f"{target.venv}/bin/fovea-agent", "version"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()[-1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_agent_upgrade_then_broken_wheel_rolled_back(
    agent_wheels: AgentWheels, bundles: Any, tmp_path: Path
) -> None:
    w = agent_wheels
    target = FlashTarget(
        LocalTransport("dev-up"), str(tmp_path / "root"), str(tmp_path / "opt"), _free_port()
    )
    service = ServiceSpec("fovea-agent", ("true",), target.root, target.prefix)
    plan = FlashPlan(
        bundle=bundles.v1, trusted_key=bundles.public_key, wheel=w.old, wheelhouse=w.wheelhouse,
        device_python=sys.executable, supervisor="process", listen_host="127.0.0.1",
        ready_timeout=120,
    )  # fmt: skip
    try:
        [flashed] = flash([target], plan)
        assert flashed.status == "flashed", flashed.error
        assert flashed.agent_version == "0.1.1" and flashed.url and flashed.token
        spec = TransportSpec(
            kind="local", root=target.root, agent=f"{target.venv}/bin/fovea-agent",
            restart=("sh", "-c", f"kill -HUP $(cat {service.pidfile})"),
        )  # fmt: skip
        assert spec.wheels == f"{target.prefix}/wheels"  # where flash kept the wheel it installed
        assert Path(target.prefix, "wheels", w.old.name).is_file()
        inventory = Inventory(tmp_path / "fleet.db")
        inventory.add(Device(host="dev-up", url=flashed.url, token=flashed.token, transport=spec))

        # the successful upgrade goes through the CLI: `fovea fleet upgrade-agent WHEEL`
        args = ["upgrade-agent", str(w.new), "--db", str(inventory.path),
                "--canary", "1", "--soak", "1", "--ready-timeout", "90"]  # fmt: skip
        res = CliRunner().invoke(fleet_app, args)
        assert res.exit_code == 0, res.output
        [up] = inventory.rollouts()
        assert up.status == "succeeded" and up.kind == "agent", up.summary
        [host] = up.hosts
        assert (host.result, host.from_version, host.to_version) == ("updated", "0.1.1", "0.1.2")
        assert {"copy", "pip install", "restart", "ready"} <= set(host.steps)
        assert _agent_version(target) == "0.1.2"
        assert inventory.get("dev-up").agent_version == "0.1.2"
        assert _ready(flashed.url)

        bad = RolloutPlan(canary=1, soak_s=1, check_interval_s=0.5, ready_timeout_s=15)
        back = asyncio.run(rollout(inventory, AgentChange(w.broken), bad))
        assert back.status == "rolled back", back.summary
        [host] = back.hosts
        assert host.result == "rolled back" and "not ready" in (host.error or ""), host.error
        assert {"pip install", "pip reinstall", "revert"} <= set(host.steps)
        assert "broken on purpose" in Path(service.log).read_text(errors="replace")
        assert _agent_version(target) == "0.1.2"  # the previous wheel, kept by the upgrade
        assert _ready(flashed.url)
        device = inventory.get("dev-up")
        assert device.agent_version == "0.1.2" and device.status == "ready", device.error
        assert [r.status for r in inventory.rollouts()] == ["rolled back", "succeeded"]
    finally:
        asyncio.run(ProcessSupervisor(LocalTransport(target.host), service).stop())
