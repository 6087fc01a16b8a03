"""The fleet over SSH: a device registered with an ssh transport, polled and rolled out to.

The device is a local device root with a real agent, but the inventory reaches it only through
the real sshd on 127.0.0.1 (SFTP copy of the bundle, ``fovea-agent`` and the restart command run
over SSH, host key checked against the fixture's known_hosts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.fleet import BundleChange, RolloutPlan, TransportSpec, connect, poll, rollout
from deploy.transport import SshTransport

pytestmark = pytest.mark.slow


def test_fleet_rollout_and_poll_over_ssh(
    make_fleet: Callable[..., Any], bundles: Any, sshd: Any, tmp_path: Path
) -> None:
    fleet = make_fleet(["dev-ssh"])
    device = fleet.inventory.get("dev-ssh")
    local = device.transport
    spec = TransportSpec(
        kind="ssh", root=local.root, agent=local.agent, restart=local.restart,
        user=sshd.user, address="127.0.0.1", port=sshd.port, key=str(sshd.client_key),
        known_hosts=str(sshd.known_hosts),
    )  # fmt: skip
    fleet.inventory.add(device.model_copy(update={"transport": spec}), replace=True)

    [polled] = asyncio.run(poll(fleet.inventory))
    assert polled.status == "ready" and polled.model_version == 1, polled.error
    assert polled.agent_version and polled.agent_version != "unknown"  # asked over SSH
    assert polled.hardware  # `python -c ...` over SSH

    plan = RolloutPlan(canary=1, soak_s=1, check_interval_s=0.5, ready_timeout_s=90)
    pid_before = fleet.pid("dev-ssh")
    result = asyncio.run(rollout(fleet.inventory, BundleChange(bundles.v2), plan))

    assert result.status == "succeeded", result.summary
    [host] = result.hosts
    assert (host.result, host.from_version, host.to_version) == ("updated", "1", "2")
    assert {"copy", "install", "restart", "ready"} <= set(host.steps)
    assert (fleet.roots["dev-ssh"] / "incoming" / bundles.v2.name).is_file()  # copied by SFTP
    assert fleet.pid("dev-ssh") != pid_before  # the restart command ran over SSH
    after = fleet.inventory.get("dev-ssh")
    assert after.model_version == 2 and after.status == "ready"
    assert isinstance(connect(after), SshTransport)

    # the SSH path really is the one used: a wrong host key makes the same poll fail over SSH
    wrong = tmp_path / "wrong_known_hosts"
    other = sshd.client_key.with_suffix(".pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    bad = spec.model_copy(update={"known_hosts": str(wrong)})
    fleet.inventory.add(after.model_copy(update={"transport": bad}), replace=True)
    [refused] = asyncio.run(poll(fleet.inventory))
    assert "host key not accepted" in (refused.error or ""), refused.error
