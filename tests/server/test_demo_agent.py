"""The demo's edge stage: a signed bundle flashed onto three local devices (real agent
processes under the process supervisor), the fleet polled, real HTTP screening and reviews."""

import json
import shutil
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from deploy.fleet import Inventory
from edge_agent.install import DeviceRoot, active_manifest
from edge_agent.store import Store
from server.demo.agent import DEVICE_SITES, agent_stage

pytestmark = pytest.mark.slow


def _agents_running(devices: dict[str, Path], grace_s: float = 10.0) -> list[str]:
    """Agent or keeper processes of these devices still alive after ``grace_s`` (exiting takes
    a moment after the supervisor has seen the pid file go)."""
    roots = {str(p) for p in devices.values()}
    deadline = time.monotonic() + grace_s
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            alive = proc.info["status"] != psutil.STATUS_ZOMBIE
            if alive and "serve" in cmd and any(root in cmd for root in roots):
                found.append(cmd)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_agent_stage_flashes_polls_screens_and_cleans_up(tiny_export: Path, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    console = Console(record=True, width=160)

    first = agent_stage(tmp_path / "demo", export, console, patients=4, shifted_patients=4)

    assert set(first.devices) == set(DEVICE_SITES) and first.screened == 4 * len(DEVICE_SITES)
    fleet = {d.host: d for d in Inventory(first.fleet_db).devices()}
    assert {h: d.site for h, d in fleet.items()} == DEVICE_SITES
    assert all(d.status == "ready" and d.model_version == 1 for d in fleet.values())
    for root in first.devices.values():
        manifest = active_manifest(DeviceRoot(root))
        assert manifest is not None and manifest.version == 1
        counts = Store(DeviceRoot(root).state_db).counts()
        assert counts["screenings"] == 8 and counts["reviews"] == 8
    assert (first.tokens.stat().st_mode & 0o077) == 0, "tokens must be private to the owner"
    assert "retake" in console.export_text(), "the demo shows an ungradable eye being refused"
    assert not _agents_running(first.devices), "the demo must not leave agents running"

    # a changed export becomes bundle v2, flashed onto every device; accounts are kept
    (export / "export.json").write_text((export / "export.json").read_text() + "\n")
    again = agent_stage(tmp_path / "demo", export, console, patients=4, shifted_patients=4)
    assert again.bundle.name.endswith("-v2.tar")
    assert json.loads(again.tokens.read_text()) == json.loads(first.tokens.read_text())
    fleet = {d.host: d for d in Inventory(again.fleet_db).devices()}
    assert all(d.model_version == 2 for d in fleet.values())
    assert not _agents_running(again.devices)
