"""The demo's edge stage: a real signed bundle, a real ``fovea-agent`` process, real HTTP."""

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from edge_agent.install import DeviceRoot, active_manifest
from edge_agent.store import Store
from server.demo_agent import agent_stage

pytestmark = pytest.mark.slow


def test_agent_stage_installs_serves_screens_and_records_reviews(
    tiny_export: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    console = Console(record=True, width=160)

    first = agent_stage(tmp_path / "demo", export, console)

    device = DeviceRoot(first.root)
    manifest = active_manifest(device)
    assert manifest is not None and manifest.version == 1
    assert first.bundle.is_file() and first.screened == 4
    assert (first.tokens.stat().st_mode & 0o077) == 0, "tokens must be private to the owner"
    counts = Store(device.state_db).counts()
    assert counts["screenings"] == 8 and counts["reviews"] == 8
    assert "retake" in console.export_text(), "the demo shows an ungradable eye being refused"

    # run again: nothing to install, same accounts; a changed export becomes version 2
    again = agent_stage(tmp_path / "demo", export, console)
    assert again.bundle == first.bundle
    assert json.loads(again.tokens.read_text()) == json.loads(first.tokens.read_text())
    (export / "export.json").write_text((export / "export.json").read_text() + "\n")
    third = agent_stage(tmp_path / "demo", export, console)
    manifest = active_manifest(device)
    assert (
        manifest is not None
        and manifest.version == 2
        and third.bundle.name == f"{manifest.name}-v2.tar"
    )
