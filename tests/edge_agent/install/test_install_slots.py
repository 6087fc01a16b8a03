"""Installing into A/B slots, refusals that change nothing, prepare, rollback, history."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.bundle import BundleError, Manifest
from edge_agent.install import (
    DeviceRoot,
    InstallError,
    active_manifest,
    install,
    read_updates,
    record_update,
    rollback,
    verify_slot,
)
from edge_agent.install.history import UpdateRecord

MakeBundle = Callable[[int], Path]


def _versions(device: DeviceRoot) -> tuple[str | None, int | None]:
    manifest = active_manifest(device)
    return device.active_slot(), manifest.version if manifest else None


def test_first_and_second_install_alternate_slots(
    device: DeviceRoot, make_bundle: MakeBundle
) -> None:
    assert active_manifest(device) is None
    first = install(device, make_bundle(1))
    assert (first.slot, first.previous_version) == ("a", None)
    assert os.readlink(device.current) == "slots/a"
    second = install(device.path, make_bundle(2))
    assert (second.slot, second.previous_version) == ("b", 1)
    assert _versions(device) == ("b", 2)
    assert verify_slot(device).version == 2
    assert verify_slot(device, "a").version == 1
    history = read_updates(device.updates_log)
    assert [(r.status, r.from_version, r.to_version, r.slot) for r in history] == [
        ("installed", None, 1, "a"),
        ("installed", 1, 2, "b"),
    ]
    assert not device.journal.exists()
    assert sorted(p.name for p in device.slots.iterdir()) == ["a", "b"]


def test_prepare_sees_the_verified_bundle_before_the_switch(
    device: DeviceRoot, make_bundle: MakeBundle
) -> None:
    install(device, make_bundle(1))
    seen: list[tuple[Path, int, str | None, bool]] = []

    def prepare(directory: Path, manifest: Manifest) -> None:
        onnx = (directory / manifest.precisions["fp32"].file).is_file()
        seen.append((directory, manifest.version, device.active_slot(), onnx))

    install(device, make_bundle(2), prepare=prepare)
    assert len(seen) == 1
    directory, version, active_during, has_model = seen[0]
    assert (version, active_during, has_model) == (2, "a", True)
    assert not directory.exists(), "prepare ran on the staging dir, renamed into the slot since"


def test_failing_prepare_keeps_the_old_model_and_rollback_target(
    device: DeviceRoot, make_bundle: MakeBundle
) -> None:
    install(device, make_bundle(1))
    install(device, make_bundle(2))

    def prepare(directory: Path, manifest: Manifest) -> None:
        raise RuntimeError("golden check failed: max error 3.2 > 0.05")

    with pytest.raises(InstallError, match=r"golden check failed.*still serving version 2"):
        install(device, make_bundle(3), prepare=prepare)
    assert _versions(device) == ("b", 2)
    assert verify_slot(device, "a").version == 1
    last = read_updates(device.updates_log)[-1]
    assert (last.status, last.from_version, last.slot) == ("failed", 2, "a")
    assert "golden check failed" in last.detail
    assert [p.name for p in device.slots.iterdir() if p.name.startswith(".")] == []


def test_downgrade_is_refused_unless_allowed(device: DeviceRoot, make_bundle: MakeBundle) -> None:
    install(device, make_bundle(2))
    for version in (1, 2):
        with pytest.raises(BundleError, match="not newer than the installed version 2"):
            install(device, make_bundle(version))
    assert _versions(device) == ("a", 2)
    assert not device.slot("b").exists()
    assert [r.status for r in read_updates(device.updates_log)] == [
        "installed",
        "refused",
        "refused",
    ]
    install(device, make_bundle(1), allow_downgrade=True)
    assert _versions(device) == ("b", 1)


def test_untrusted_bundle_changes_nothing(
    device: DeviceRoot, make_bundle: MakeBundle, tiny_export: Path, tmp_path: Path
) -> None:
    install(device, make_bundle(1))
    stranger, _ = generate_keypair(tmp_path / "stranger", "stranger")
    evil = build_bundle(tiny_export, tmp_path / "evil.tar", 5, stranger)
    with pytest.raises(BundleError, match="untrusted key"):
        install(device, evil)
    assert _versions(device) == ("a", 1)
    assert not device.slot("b").exists()


def test_rollback_switches_to_the_previous_slot(
    device: DeviceRoot, make_bundle: MakeBundle
) -> None:
    install(device, make_bundle(1))
    install(device, make_bundle(2))
    result = rollback(device)
    assert (result.slot, result.manifest.version, result.previous_version) == ("a", 1, 2)
    assert _versions(device) == ("a", 1)
    last = read_updates(device.updates_log)[-1]
    assert (last.action, last.status, last.from_version, last.to_version) == (
        "rollback",
        "rolled-back",
        2,
        1,
    )
    # the next install replaces the rolled-back-from slot b, and goes to version 3
    assert install(device, make_bundle(3)).slot == "b"


def test_rollback_refuses_an_incomplete_or_altered_slot(
    device: DeviceRoot, make_bundle: MakeBundle
) -> None:
    with pytest.raises(InstallError, match="nothing is installed"):
        rollback(device)
    install(device, make_bundle(1))
    with pytest.raises(InstallError, match="slot b holds no complete verified bundle"):
        rollback(device)
    install(device, make_bundle(2))
    model = device.slot("a") / "model.fp32.onnx"
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(InstallError, match=r"model\.fp32\.onnx does not match"):
        rollback(device)
    assert _versions(device) == ("b", 2)


def test_rollback_refuses_a_bundle_signed_by_a_revoked_key(
    device: DeviceRoot, make_bundle: MakeBundle, publisher_key: tuple[Path, Path]
) -> None:
    install(device, make_bundle(1))
    install(device, make_bundle(2))
    assert device.keys.revoked is not None
    (device.keys.revoked / "publisher.pub").write_bytes(publisher_key[1].read_bytes())
    with pytest.raises(InstallError, match="revoked key"):
        rollback(device)


def test_a_second_install_at_the_same_time_is_refused(
    device: DeviceRoot, make_bundle: MakeBundle
) -> None:
    fd = os.open(device.lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(InstallError, match="another install or rollback is running"):
            install(device, make_bundle(1))
    finally:
        os.close(fd)
    assert install(device, make_bundle(1)).slot == "a"


def test_history_survives_a_torn_last_line(device: DeviceRoot) -> None:
    log = device.updates_log
    record_update(log, UpdateRecord(action="install", status="installed", to_version=1))
    with log.open("a") as f:
        f.write('{"schema_version": 1, "time": "2026-')  # cut short by a power loss
    record_update(log, UpdateRecord(action="rollback", status="rolled-back", to_version=1))
    assert [r.action for r in read_updates(log)] == ["install", "rollback"]
    log.write_text(log.read_text() + '{"action": "format-disk"}\n')
    with pytest.raises(ValueError, match="not an update record"):
        read_updates(log)


def test_current_that_is_not_a_slot_link_is_an_error(device: DeviceRoot) -> None:
    device.current.symlink_to("/etc")
    with pytest.raises(InstallError, match="not slots/a or slots/b"):
        device.active_slot()
