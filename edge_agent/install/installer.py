"""Install a bundle into the inactive slot and switch to it atomically; roll back; recover."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.bundle import (
    MANIFEST_NAME,
    BundleError,
    Manifest,
    fsync_dir,
    open_bundle,
    verify_tree,
    write_atomic,
)
from edge_agent.install.history import UpdateRecord, read_updates, record_update
from edge_agent.install.layout import SLOTS, DeviceRoot, InstallError, other_slot
from edge_agent.install.reconcile import sync_history
from edge_agent.store import Store

Prepare = Callable[[Path, Manifest], None]
"""Called with the verified bundle's directory and manifest before the switch; raise to abort."""

CRASH_ENV = "FOVEA_AGENT_CRASH_AT"
STEPS: tuple[str, ...] = (
    "locked",  # lock held, leftovers of an earlier crash cleaned
    "journal",  # the attempt is journaled
    "unpacked",  # bundle verified and extracted into staging, fsynced
    "prepared",  # prepare hook passed
    "set-aside",  # the inactive slot's old content moved aside
    "slot",  # staging renamed into the inactive slot
    "switched",  # current points to the new slot
    "recorded",  # update history written
    "done",  # old content and journal removed
)
"""Step boundaries of an install; ``FOVEA_AGENT_CRASH_AT=<step>`` kills the process there."""


def _step(name: str) -> None:
    # Test hook for the crash-safety tests: die as abruptly as a power loss would.
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class InstallResult:
    """What an install or rollback did: the now-active manifest and slot, and what was before."""

    manifest: Manifest
    slot: str
    slot_dir: Path
    previous_version: int | None
    attempt: str = ""
    """The attempt's id in ``updates.jsonl`` (what ``sync_history`` matches state.db rows by)."""


class _Journal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    attempt: str
    slot: str
    from_version: int | None
    bundle: str


def _as_root(root: DeviceRoot | Path) -> DeviceRoot:
    return root if isinstance(root, DeviceRoot) else DeviceRoot(Path(root))


@contextmanager
def _locked(root: DeviceRoot) -> Iterator[None]:
    root.ensure()
    fd = os.open(root.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError(f"another install or rollback is running on {root.path}") from None
        yield
    finally:
        os.close(fd)


def _aside(root: DeviceRoot, slot: str) -> Path:
    return root.slots / f".old-{slot}"


def _recover(root: DeviceRoot) -> None:
    """Undo what an interrupted install left: staging dirs, half-replaced slots, the journal."""
    for path in root.slots.iterdir():
        if path.name.startswith(".staging-"):
            shutil.rmtree(path)
    active = root.active_slot()
    for name in SLOTS:
        aside, slot = _aside(root, name), root.slot(name)
        if not aside.exists():
            continue
        if active == name:  # the switch happened: the old content is no longer needed
            shutil.rmtree(aside)
            continue
        if slot.exists():  # the new bundle never became active: restore the slot as it was
            shutil.rmtree(slot)
        if any(aside.iterdir()):
            os.rename(aside, slot)
        else:
            aside.rmdir()
    fsync_dir(root.slots)
    if root.journal.exists():
        _close_journal(root, active)


def _close_journal(root: DeviceRoot, active: str | None) -> None:
    try:
        journal = _Journal.model_validate_json(root.journal.read_bytes())
    except (ValidationError, ValueError):
        journal = None
    recorded = journal and any(r.attempt == journal.attempt for r in read_updates(root.updates_log))
    if journal and not recorded:
        manifest = active_manifest(root) if active == journal.slot else None
        record_update(
            root.updates_log,
            UpdateRecord(
                action="install",
                status="installed" if manifest else "interrupted",
                from_version=journal.from_version,
                to_version=manifest.version if manifest else None,
                slot=journal.slot,
                detail=f"{journal.bundle}: "
                + ("completed; recorded after a restart" if manifest else "interrupted; undone"),
                attempt=journal.attempt,
            ),
        )
    root.journal.unlink()
    fsync_dir(root.path)


def recover(root: DeviceRoot | Path, store: Store | None = None) -> None:
    """Clean up after an install interrupted by a crash or power loss (safe to call any time).

    With ``store``, its update history then learns every install, rollback and interrupted
    install that only ``updates.jsonl`` knows (``sync_history``), so it records what is served.
    """
    root = _as_root(root)
    with _locked(root):
        _recover(root)
    if store is not None:
        sync_history(root, store)


def active_manifest(root: DeviceRoot | Path) -> Manifest | None:
    """The manifest of the active slot (as installed; not re-verified), or None if none."""
    root = _as_root(root)
    if root.active_slot() is None:
        return None
    path = root.current / MANIFEST_NAME
    try:
        return Manifest.from_bytes(path.read_bytes(), str(path))
    except (OSError, BundleError) as exc:
        raise InstallError(f"the active bundle is unreadable ({exc}); reinstall a bundle") from exc


def verify_slot(root: DeviceRoot | Path, slot: str | None = None) -> Manifest:
    """Fully verify a slot (default: the active one): signature, every file's sha256 and size."""
    root = _as_root(root)
    name = slot or root.active_slot()
    if name is None:
        raise InstallError(f"nothing is installed in {root.path}")
    return verify_tree(root.slot(name), root.keys)


def _installed_version(root: DeviceRoot, allow_downgrade: bool) -> int | None:
    try:
        manifest = active_manifest(root)
    except InstallError:
        if allow_downgrade:
            return None
        raise
    return manifest.version if manifest else None


def install(
    root: DeviceRoot | Path,
    bundle: Path,
    *,
    allow_downgrade: bool = False,
    prepare: Prepare | None = None,
) -> InstallResult:
    """Verify ``bundle``, unpack it into the inactive slot, ``prepare`` it, switch ``current``.

    ``prepare(dir, manifest)`` runs on the verified bundle before it takes the slot (the
    directory is a staging dir renamed into the slot afterwards: write nothing into it, keep
    engines under ``root.engines``); raising aborts the install. Refusals raise ``BundleError``,
    other failures ``InstallError``; either way the active slot is untouched. Every outcome is
    appended to ``updates.jsonl``.
    """
    root = _as_root(root)
    with _locked(root):
        _recover(root)
        _step("locked")
        before = _installed_version(root, allow_downgrade)
        target = other_slot(root.active_slot())
        journal = _Journal(
            attempt=uuid.uuid4().hex, slot=target, from_version=before, bundle=str(bundle)
        )
        write_atomic(root.journal, journal.model_dump_json().encode())
        _step("journal")

        def finish(status: Literal["refused", "failed"], detail: str) -> None:
            shutil.rmtree(staging, ignore_errors=True)
            record = UpdateRecord(
                action="install", status=status, from_version=before, slot=target,
                detail=detail, attempt=journal.attempt,
            )  # fmt: skip
            record_update(root.updates_log, record)
            root.journal.unlink()
            fsync_dir(root.path)

        staging = root.slots / f".staging-{target}"
        try:
            manifest = open_bundle(
                bundle,
                staging,
                root.keys,
                installed_version=before,
                allow_downgrade=allow_downgrade,
            )
        except BundleError as exc:
            finish("refused", str(exc))
            raise
        _step("unpacked")
        if prepare is not None:
            try:
                prepare(staging, manifest)
            except Exception as exc:
                finish("failed", f"prepare: {exc}")
                raise InstallError(
                    f"{bundle} (version {manifest.version}) failed its checks on this device: "
                    f"{exc}; still serving version {before}"
                ) from exc
        _step("prepared")
        _replace_slot(root, target, staging)
        root.switch_to(target)
        _step("switched")
        record = UpdateRecord(
            action="install", status="installed", from_version=before,
            to_version=manifest.version, slot=target, detail=str(bundle),
            attempt=journal.attempt,
        )  # fmt: skip
        record_update(root.updates_log, record)
        _step("recorded")
        shutil.rmtree(_aside(root, target))
        root.journal.unlink()
        fsync_dir(root.slots)
        fsync_dir(root.path)
        _step("done")
    return InstallResult(manifest, target, root.slot(target), before, journal.attempt)


def _replace_slot(root: DeviceRoot, target: str, staging: Path) -> None:
    slot, aside = root.slot(target), _aside(root, target)
    if slot.exists():
        os.rename(slot, aside)
    else:
        aside.mkdir()  # an empty marker: "the slot was empty before"
    fsync_dir(root.slots)
    _step("set-aside")
    os.rename(staging, slot)
    fsync_dir(root.slots)
    _step("slot")


def rollback(
    root: DeviceRoot | Path, *, prepare: Prepare | None = None, reason: str = ""
) -> InstallResult:
    """Switch back to the other slot if it holds a complete, verified bundle.

    ``prepare(dir, manifest)`` runs on that slot after it verified, before the switch; raising
    aborts the rollback. ``reason`` goes into the history. An active slot whose manifest is
    unreadable does not stop the rollback (it is what a rollback is for).
    """
    root = _as_root(root)
    with _locked(root):
        _recover(root)
        active = root.active_slot()
        if active is None:
            raise InstallError(f"nothing is installed in {root.path}; nothing to roll back")
        target = other_slot(active)
        try:
            manifest = verify_tree(root.slot(target), root.keys)
        except BundleError as exc:
            raise InstallError(
                f"cannot roll back: slot {target} holds no complete verified bundle ({exc})"
            ) from None
        before = _installed_version(root, allow_downgrade=True)
        if prepare is not None:
            try:
                prepare(root.slot(target), manifest)
            except Exception as exc:
                raise InstallError(
                    f"cannot roll back to version {manifest.version}: {exc}"
                ) from exc
        root.switch_to(target)
        record = UpdateRecord(
            action="rollback", status="rolled-back", from_version=before,
            to_version=manifest.version, slot=target, detail=reason, attempt=uuid.uuid4().hex,
        )  # fmt: skip
        record_update(root.updates_log, record)
    return InstallResult(manifest, target, root.slot(target), before, record.attempt or "")
