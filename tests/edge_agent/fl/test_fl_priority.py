"""Training yields to screening: the busy file pauses it, and it runs niced with few threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge_agent.fl.priority import BusyFile, mark_busy, pause_while_busy


def test_busy_file_is_busy_only_while_fresh(tmp_path: Path) -> None:
    signal = BusyFile.for_root(tmp_path, window_s=5.0)
    assert not signal.is_busy()
    mark_busy(tmp_path)
    assert signal.is_busy()
    os.utime(signal.path, (0, 0))
    assert not signal.is_busy()


def test_pause_waits_while_busy_then_goes_on() -> None:
    answers = iter([True, True, False])

    class _Signal:
        def is_busy(self) -> bool:
            return next(answers)

    slept: list[float] = []
    waited = pause_while_busy(_Signal(), poll_s=0.5, sleep=slept.append)
    assert slept == [0.5, 0.5] and waited == 1.0


def test_pause_gives_up_after_max_wait() -> None:
    class _Busy:
        def is_busy(self) -> bool:
            return True

    slept: list[float] = []
    assert pause_while_busy(_Busy(), poll_s=1.0, max_wait_s=3.0, sleep=slept.append) == 3.0


def test_lower_priority_nices_and_limits_threads() -> None:
    code = (
        "import os, torch; from edge_agent.fl.priority import lower_priority; "
        "before = os.nice(0); lower_priority(threads=1, niceness=10); "
        "print(os.nice(0) - before >= 0, os.nice(0) >= 10, torch.get_num_threads())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[3]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "1"]
