"""TegrastatsReader against a fake ``tegrastats`` on PATH: started only where it is needed,
its latest line feeds the snapshot, and it stops cleanly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edge_agent.telemetry import TegrastatsReader, snapshot

FIXTURES = Path(__file__).parent / "fixtures"

# prints a JetPack 5 line every --interval ms; the GPU rail counts the lines
FAKE = """#!/bin/sh
[ "$1" = "--interval" ] || {{ echo "usage: tegrastats --interval MS" >&2; exit 2; }}
echo $$ > {pidfile}
i=0
while :; do
  i=$((i + 1))
  echo "{line}" | sed "s#GPU 467mW/467mW#GPU ${{i}}mW/467mW#"
  sleep "$(echo "$2" | awk '{{ print $1 / 1000 }}')"
done
"""


@pytest.fixture
def fake_tegrastats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``tegrastats`` script first on PATH; returns the file where it writes its pid."""
    bin_dir, pidfile = tmp_path / "bin", tmp_path / "tegrastats.pid"
    bin_dir.mkdir()
    line = (FIXTURES / "tegrastats_jetpack5.txt").read_text().strip()
    script = bin_dir / "tegrastats"
    script.write_text(FAKE.format(pidfile=pidfile, line=line))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return pidfile


def _until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_reader_feeds_snapshot_and_stops(fake_tegrastats: Path, tmp_path: Path) -> None:
    root = tmp_path / "no-rails"  # a Jetson whose sysfs shows no INA3221 rails
    root.mkdir()
    reader = TegrastatsReader(root, interval_ms=50)
    assert reader.latest() is None
    assert reader.start() and reader.running, reader.reason
    assert reader.start()  # idempotent: still one process
    assert _until(lambda: (reader.latest() or "").startswith("RAM"))
    first = reader.latest()
    assert _until(lambda: reader.latest() != first), "the reader keeps only a stale line"
    snap = snapshot(root, tegrastats_line=reader.latest())
    assert snap["power"]["source"] == "tegrastats"
    assert set(snap["power"]["rails"]) == {"GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"}
    assert snap["power"]["rails"]["GPU"]["power_mw"] >= 2  # a later line than the first
    pid = int(fake_tegrastats.read_text())
    thread = reader._thread
    reader.stop()
    assert not reader.running and reader.reason == "stopped"
    assert thread is not None and not thread.is_alive()
    assert _until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 5.0)
    reader.stop()  # stopping twice is harmless


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_reader_not_started_where_sysfs_has_rails(fake_tegrastats: Path) -> None:
    with TegrastatsReader(FIXTURES / "jetpack5", interval_ms=50) as reader:
        assert not reader.running and reader.reason.startswith("not needed")
        assert reader.latest() is None
    assert not fake_tegrastats.exists()


def test_reader_without_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reader = TegrastatsReader(tmp_path, binary="tegrastats")
    assert not reader.start() and "not found" in reader.reason
    with pytest.raises(ValueError, match="interval_ms"):
        TegrastatsReader(tmp_path, interval_ms=0)
