"""Crash safety: SIGKILL the install at each step; the device serves one complete model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.install import (
    CRASH_ENV,
    STEPS,
    DeviceRoot,
    active_manifest,
    install,
    read_updates,
    recover,
    served_version,
    verify_slot,
)
from edge_agent.store import Store

SWITCHED = STEPS.index("switched")
_SCRIPT = """
import sys
from pathlib import Path
from edge_agent.install import install
install(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def _install_in_a_process_killed_at(step: str, root: Path, bundle: Path) -> int:
    env = {**os.environ, CRASH_ENV: step}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root), str(bundle)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode


@pytest.mark.parametrize("step", STEPS)
def test_killed_install_leaves_one_complete_model(
    step: str, device: DeviceRoot, make_bundle: Callable[[int], Path]
) -> None:
    install(device, make_bundle(1))  # slot a
    install(device, make_bundle(2))  # slot b, active; slot a stays the rollback target
    code = _install_in_a_process_killed_at(step, device.path, make_bundle(3))
    assert code == -signal.SIGKILL, f"the install was not killed at {step!r} (exit {code})"

    # As found after the power comes back, before any recovery ran:
    switched = STEPS.index(step) >= SWITCHED
    expected = ("a", 3) if switched else ("b", 2)
    assert device.active_slot() == expected[0]
    assert verify_slot(device).version == expected[1], "the active slot must verify completely"

    with Store(device.state_db) as store:  # what the agent's start does: recover, then sync
        recover(device, store)
        assert served_version(store) == expected[1], "state.db must record what is served"
        rows = store.updates()
        recover(device, store)
        assert store.updates() == rows, "a second start must not record anything again"
        if switched:
            assert rows[-1].detail["reconciled"] is True
            assert rows[-1].detail["attempt"] == read_updates(device.updates_log)[-1].attempt
    assert verify_slot(device).version == expected[1]
    other = verify_slot(device, "b" if switched else "a")
    assert other.version == (2 if switched else 1), "the rollback target must survive"
    assert sorted(p.name for p in device.slots.iterdir()) == ["a", "b"]
    assert not device.journal.exists()
    last = read_updates(device.updates_log)[-1]
    if switched:
        assert (last.status, last.to_version) == ("installed", 3)
    elif step == "locked":  # killed before the attempt was journaled: nothing to record
        assert (last.status, last.to_version) == ("installed", 2)
    else:
        assert (last.status, last.from_version) == ("interrupted", 2)

    # A fresh install afterwards succeeds.
    if switched:
        result = install(device, make_bundle(4))
        assert (result.slot, result.manifest.version) == ("b", 4)
    else:
        result = install(device, make_bundle(3))
        assert (result.slot, result.manifest.version) == ("a", 3)
    manifest = active_manifest(device)
    assert manifest is not None and manifest.version == result.manifest.version
    assert verify_slot(device).version == result.manifest.version


def test_killed_first_install_leaves_nothing_half_installed(
    device: DeviceRoot, make_bundle: Callable[[int], Path]
) -> None:
    code = _install_in_a_process_killed_at("slot", device.path, make_bundle(1))
    assert code == -signal.SIGKILL
    assert device.active_slot() is None
    install(device, make_bundle(1))  # recovers, then installs
    assert verify_slot(device).version == 1
    assert [r.status for r in read_updates(device.updates_log)] == ["interrupted", "installed"]
