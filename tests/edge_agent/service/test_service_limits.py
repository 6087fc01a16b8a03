"""The agent raises its soft open-file limit to the hard one at start, and says so."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

_SCRIPT = """
import json, resource
from edge_agent.service.limits import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
lines = []
got = raise_open_files_limit(lines.append)
print(json.dumps({"got": got, "now": resource.getrlimit(resource.RLIMIT_NOFILE),
                  "hard": hard, "log": lines}))
"""


def test_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    if out["hard"] == resource.RLIM_INFINITY:
        pytest.skip("an unlimited hard limit: raised to a cap the kernel may refuse")
    assert out["hard"] > 256, "the test needs a hard limit above 256"
    assert out["now"][0] == out["got"][0] > 256
    assert out["log"] == [f"open files: soft limit raised from 256 to {out['now'][0]} "
                          f"(hard {out['hard']})"]  # fmt: skip
