"""What a flash copies: the fovea-edge wheel (built once) and a wheelhouse of its dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def build_wheel(project: Path, out: Path) -> Path:
    """Build the fovea-edge wheel of the source tree ``project`` into ``out``; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in out.glob("fovea_edge-*.whl")}
    for old in out.glob("fovea_edge-*.whl"):
        old.unlink()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
           "-w", str(out), str(project)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(out.glob("fovea_edge-*.whl"))
    if res.returncode != 0 or not wheels:
        raise RuntimeError(
            f"building the fovea-edge wheel from {project} failed "
            f"(had {sorted(before)}): {res.stderr.strip()[-1500:]}"
        )
    return wheels[-1]


def make_wheelhouse(wheel: Path, dest: Path, extras: str = "agent") -> Path:
    """Download the wheels ``wheel[extras]`` needs (for this machine's platform) into ``dest``.

    For a device of another architecture (a Jetson is aarch64) the site supplies the wheelhouse.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
           "-d", str(dest), f"{wheel}[{extras}]"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(
            f"pip download of the agent's dependencies into {dest} failed: "
            f"{res.stderr.strip()[-1500:]}; pass a ready wheelhouse with --wheelhouse"
        )
    (dest / wheel.name).unlink(missing_ok=True)
    return dest
