"""The offline installer on a Jetson: it carries the worker's pinned requirements, makes the
agent venv with system site-packages and hands the worker settings to the device-side flash,
which picks the requirements of the device's L4T release. Its Python is a stub that records
how it is called (the real flash steps are tested in test_flash_jetson)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_flash_jetson import R35, fake_wheel

from deploy.flash import build_offline_installer
from deploy.flash.offline import parse_args, plan_from_args

STUB = """#!/bin/sh
# stands in for python3.11 and, copied into the venv, for its python: records each call
echo "$*" >> {log}
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  for last; do :; done
  mkdir -p "$last/bin" && cp "$0" "$last/bin/python"
fi
if [ "$2" = "deploy.flash.offline" ]; then cp -r "$4" {unpacked}; fi
exit 0
"""


def test_offline_installer_hands_the_worker_settings_on(
    make_plan: Callable[..., Any], tmp_path: Path
) -> None:
    wheel = fake_wheel(tmp_path / "dist", "fovea_edge", "0.0.1")
    wheelhouse = tmp_path / "wheelhouse"
    fake_wheel(wheelhouse)  # stands in for the site's cp38 aarch64 worker wheels
    plan = make_plan(wheel=wheel, wheelhouse=wheelhouse, agent_venv=None)
    made = build_offline_installer(plan, tmp_path / "usb")
    log, unpacked = tmp_path / "calls.log", tmp_path / "unpacked"
    stub = tmp_path / "python3.11"
    stub.write_text(STUB.format(log=log, unpacked=unpacked))
    stub.chmod(0o755)
    release = tmp_path / "nv_tegra_release"
    release.write_text(R35)
    prefix = tmp_path / "opt"
    res = subprocess.run(
        ["sh", str(made.path), "--prefix", str(prefix), "--python", str(stub),
         "--system-python", "/usr/bin/python3.8"],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "FOVEA_TEGRA_RELEASE": str(release)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    venv, pip, flash = log.read_text().splitlines()
    assert venv == f"-m venv --system-site-packages {prefix}/venv"  # a Jetson: JetPack's site
    assert pip.startswith("-m pip install") and "fovea_edge-0.0.1" in pip
    assert flash.endswith(
        f"--worker auto --system-python /usr/bin/python3.8 --tegra-release {release}"
    )
    # the payload (checksums verified by the run) carries both releases' pins
    pins = sorted(p.name for p in (unpacked / "jetson").iterdir())
    assert pins == ["worker-requirements-jp5.txt", "worker-requirements-jp6.txt"]
    args = parse_args(["--from", str(unpacked), *flash.split()[flash.split().index("--root") :]])
    chosen = plan_from_args(args)
    assert chosen.worker_requirements == unpacked / "jetson" / "worker-requirements-jp5.txt"
    assert "cuda-python==11.8.2" in chosen.worker_requirements.read_text()
    assert (chosen.system_python, chosen.tegra_release) == ("/usr/bin/python3.8", str(release))
    release.write_text(R35.replace("R35", "R36"))  # JetPack 6: Python 3.10 pins
    chosen = plan_from_args(args)
    assert chosen.worker_requirements == unpacked / "jetson" / "worker-requirements-jp6.txt"


def test_offline_installer_keeps_the_builders_requirements(
    make_plan: Callable[..., Any], tmp_path: Path
) -> None:
    own = tmp_path / "site-worker.txt"
    own.write_text("numpy==1.24.4\n")
    wheel = fake_wheel(tmp_path / "dist", "fovea_edge", "0.0.1")
    plan = make_plan(wheel=wheel, agent_venv=None, worker_requirements=own)
    made = build_offline_installer(plan, tmp_path / "usb")
    unpacked = tmp_path / "x"
    unpacked.mkdir()
    payload = made.path.read_bytes().split(b"__FOVEA_PAYLOAD__\n", 1)[1]
    (tmp_path / "p.tar.gz").write_bytes(payload)
    subprocess.run(["tar", "-xzf", str(tmp_path / "p.tar.gz"), "-C", str(unpacked)], check=True)
    chosen = plan_from_args(parse_args(["--from", str(unpacked / "fovea")]))
    assert chosen.worker_requirements is not None
    assert chosen.worker_requirements.read_text() == own.read_text()
