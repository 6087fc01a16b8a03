"""Flashing over a real OpenSSH server on 127.0.0.1: refusals, resumed copies, three hosts."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_flash_local import free_port

from deploy.flash import FlashTarget, ProcessSupervisor, ServiceSpec, flash
from deploy.transport import HostKeyRejected, SshTarget, SshTransport


def _ssh_target(server: Any, tmp: Path, name: str, **kw: Any) -> FlashTarget:
    transport = SshTransport(server.target(name=name, **kw))
    return FlashTarget(transport, str(tmp / name / "root"), str(tmp / name / "opt"), free_port())


def _stop(target: FlashTarget) -> None:
    from deploy.transport import LocalTransport

    spec = ServiceSpec("fovea-agent", ("true",), target.root, target.prefix)
    asyncio.run(ProcessSupervisor(LocalTransport(target.host), spec).stop())


def test_flash_unreachable_host_fails_alone(make_plan: Callable[..., Any], tmp_path: Path) -> None:
    dead = SshTransport(SshTarget("127.0.0.1", port=free_port(), connect_timeout=3, name="dead"))
    target = FlashTarget(dead, str(tmp_path / "r"), str(tmp_path / "o"), free_port())
    [result] = flash([target], make_plan())
    assert result.status == "failed" and "dead" in (result.error or "")
    assert "cannot connect" in (result.error or "")


def test_flash_wrong_host_key_refused(
    sshd: Any, tmp_path: Path, make_plan: Callable[..., Any], ssh_client_key: Path
) -> None:
    wrong = tmp_path / "known_hosts"
    other = ssh_client_key.with_suffix(".pub").read_text().split()  # not the server's key
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    transport = SshTransport(sshd.target(known_hosts=wrong))
    with pytest.raises(HostKeyRejected, match="host key not accepted"):
        asyncio.run(transport.run(["true"]))
    target = FlashTarget(SshTransport(sshd.target(known_hosts=wrong)), str(tmp_path / "r"))
    [result] = flash([target], make_plan())
    assert result.status == "failed" and "host key" in (result.error or "")
    assert not (tmp_path / "r").exists()


def test_flash_interrupted_copy_resumes(sshd: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (64 * 1024 * 4))  # 64 MiB
    remote = tmp_path / "dev" / "big.bin"
    part = Path(str(remote) + ".part")

    async def interrupted() -> None:
        transport = SshTransport(sshd.target())
        task = asyncio.create_task(transport.put(big, str(remote)))
        while not (part.exists() and part.stat().st_size > 4 << 20):
            await asyncio.sleep(0.005)
            assert not task.done(), "the copy finished before it could be interrupted"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await transport.close()

    asyncio.run(interrupted())
    assert not remote.exists() and 0 < part.stat().st_size < big.stat().st_size

    async def rerun() -> None:
        transport = SshTransport(sshd.target())
        await transport.put(big, str(remote))
        await transport.put(big, str(remote))  # identical: skipped
        await transport.close()

    asyncio.run(rerun())
    assert remote.read_bytes() == big.read_bytes() and not part.exists()


def test_flash_tampered_bundle_refused_by_device(
    sshd: Any, tmp_path: Path, make_plan: Callable[..., Any], flash_bundle: Path
) -> None:
    import tarfile

    tampered = tmp_path / "tampered.tar"
    with tarfile.open(flash_bundle) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member)
            body = data.read() if data else b""
            if member.name.endswith(".onnx") and "fp32" in member.name:
                body = body[:-1] + bytes([body[-1] ^ 1])
            dst.addfile(member, __import__("io").BytesIO(body))
    target = _ssh_target(sshd, tmp_path, "dev-t")
    [result] = flash([target], make_plan(bundle=tampered))
    assert result.status == "failed" and "refused bundle" in (result.error or "")
    assert "[step install]" in (result.error or "")
    assert not Path(target.root, "current").exists()


@pytest.mark.slow
def test_flash_three_devices_in_parallel_over_ssh(
    start_sshd: Callable[[], Any], tmp_path: Path, make_plan: Callable[..., Any]
) -> None:
    servers = [start_sshd() for _ in range(3)]
    targets = [_ssh_target(s, tmp_path, f"dev{i}") for i, s in enumerate(servers)]
    try:
        t0 = time.perf_counter()
        results = flash(targets, make_plan())
        elapsed = time.perf_counter() - t0
        print(f"flashed 3 devices over SSH in {elapsed:.1f} s")
        assert [r.status for r in results] == ["flashed"] * 3, [r.error for r in results]
        for target, r in zip(targets, results, strict=True):
            assert r.token and r.model_version == 1
            req = urllib.request.Request(
                f"http://127.0.0.1:{target.port}/v1/status",
                headers={"Authorization": f"Bearer {r.token}"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert json.loads(resp.read())["model"]
        again = flash(targets, make_plan())
        assert [r.status for r in again] == ["unchanged"] * 3, [r.error for r in again]
    finally:
        for target in targets:
            _stop(target)
