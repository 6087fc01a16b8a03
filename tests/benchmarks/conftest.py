"""Running a benchmark module as a user would, with its results written to a test's folder."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def run_benchmark(args: list[str], results: Path, timeout: float = 900) -> None:
    """``python -m ARGS`` from the checkout, writing results under ``results``; fails the test
    with the end of its stderr when it exits non-zero."""
    env = {**os.environ, "FOVEA_BENCH_RESULTS": str(results)}
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def bench() -> Callable[..., None]:
    """:func:`run_benchmark`."""
    return run_benchmark
