"""The offline installer: checksums verified first, then a real venv from wheels, serving."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_flash_local import free_port
from test_flash_ssh import _stop

from deploy.flash import build_offline_installer, build_wheel, make_wheelhouse, render_unit
from deploy.flash.supervisor import ServiceSpec

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def edge_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fovea-edge wheel of this source tree, built once."""
    return build_wheel(PROJECT, tmp_path_factory.mktemp("wheel"))


def test_flash_offline_installer_refuses_damaged_copy(
    edge_wheel: Path, make_plan: Callable[..., Any], tmp_path: Path
) -> None:
    made = build_offline_installer(make_plan(wheel=edge_wheel, agent_venv=None), tmp_path)
    check = subprocess.run(["sha256sum", "-c", made.sha256_path.name], cwd=tmp_path)
    assert check.returncode == 0
    data = bytearray(made.path.read_bytes())
    data[-100] ^= 0xFF
    made.path.write_bytes(bytes(data))
    root = tmp_path / "root"
    res = subprocess.run(
        ["sh", str(made.path), "--root", str(root)], capture_output=True, text=True
    )
    assert res.returncode == 3 and "does not match" in res.stderr
    made.sha256_path.unlink()  # without the .sha256 beside it, the embedded checksum catches it
    res = subprocess.run(
        ["sh", str(made.path), "--root", str(root)], capture_output=True, text=True
    )
    assert res.returncode == 3 and "corrupt" in res.stderr
    assert not root.exists()


@pytest.mark.slow
def test_flash_offline_installer_installs_from_wheels(
    edge_wheel: Path, make_plan: Callable[..., Any], tmp_path: Path
) -> None:
    from deploy.flash import FlashTarget
    from deploy.transport import LocalTransport

    wheelhouse = make_wheelhouse(edge_wheel, tmp_path / "wheelhouse")
    plan = make_plan(wheel=edge_wheel, wheelhouse=wheelhouse, agent_venv=None)
    made = build_offline_installer(plan, tmp_path / "usb")
    root, prefix, port = tmp_path / "dev" / "root", tmp_path / "dev" / "opt", free_port()
    target = FlashTarget(LocalTransport("offline"), str(root), str(prefix), port)
    try:
        res = subprocess.run(
            ["sh", str(made.path), "--root", str(root), "--prefix", str(prefix), "--port",
             str(port), "--python", sys.executable, "--supervisor", "process",
             "--listen", "127.0.0.1"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "fleet account token" in res.stdout
        venv_python = prefix / "venv" / "bin" / "python"
        out = subprocess.run(
            [str(venv_python), "-c", "import edge_agent, sys; print(edge_agent.__file__)"],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        assert str(prefix / "venv") in out.stdout  # the agent came from the wheel, not the repo
        assert (root / "current").is_symlink()
    finally:
        _stop(target)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_flash_systemd_unit_passes_verify(tmp_path: Path) -> None:
    agent = Path(sys.executable).with_name("fovea-agent")
    spec = ServiceSpec(
        name="fovea-agent", user="root", root=str(tmp_path), prefix=str(tmp_path),
        argv=(str(agent), "serve", "--root", str(tmp_path), "--port", "8000"),
    )  # fmt: skip
    unit = tmp_path / "fovea-agent.service"
    unit.write_text(render_unit(spec))
    text = unit.read_text()
    for setting in ("Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=yes",
                    f"ReadWritePaths={tmp_path}", "PrivateTmp=yes", "User=root",
                    "LimitNOFILE=65536", "TasksMax=512", "MemoryMax=90%"):  # fmt: skip
        assert setting in text
    res = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "fovea-agent.service" not in res.stderr, res.stderr  # no warnings about our unit
