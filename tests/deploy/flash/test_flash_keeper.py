"""The process keeper outlives a moment when the agent's script is missing (pip reinstalling it
during a rollback): it backs off and starts the agent once the script is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_the_keeper_retries_an_agent_whose_script_is_missing(tmp_path: Path) -> None:
    script, pidfile, marker = tmp_path / "agent.sh", tmp_path / "keeper.pid", tmp_path / "ran"
    log = (tmp_path / "keeper.log").open("w")
    keeper = subprocess.Popen(
        [sys.executable, "-m", "deploy.flash.keeper", "--pidfile", str(pidfile), "--", str(script)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert _wait(pidfile.is_file, 10), "the keeper did not start"
        time.sleep(1.5)  # at least one failed start and its back-off
        assert keeper.poll() is None, (tmp_path / "keeper.log").read_text()
        script.write_text(f"#!/bin/sh\ntouch {marker}\nexec sleep 30\n")
        script.chmod(0o755)
        assert _wait(marker.is_file, 15), (tmp_path / "keeper.log").read_text()
        assert "cannot start" in (tmp_path / "keeper.log").read_text()
    finally:
        os.killpg(keeper.pid, signal.SIGTERM)
        keeper.wait(timeout=30)
        log.close()
