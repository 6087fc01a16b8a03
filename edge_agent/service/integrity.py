"""Serve only what verifies: the active slot is checked at start against its signed manifest
(every file's sha256) and its golden outputs, the other slot takes over when the active one
fails and it verifies, and a background thread re-hashes the served slot while it serves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.bundle import BundleError, Manifest, manifest_digest
from edge_agent.install import (
    DeviceRoot,
    InstallError,
    other_slot,
    rollback,
    sync_history,
    verify_slot,
)
from edge_agent.runtime import Backend, ChecksFailed, ChoiceConfig, open_checked
from edge_agent.service.served import ServedModel
from edge_agent.store import Store

Log = Callable[[str], None]
ACTOR = "agent"


class SlotRefused(ValueError):
    """A slot that did not verify (files or golden outputs); ``reason`` names what failed."""

    def __init__(self, slot: str, reason: str) -> None:
        super().__init__(f"slot {slot}: {reason}")
        self.slot, self.reason = slot, reason


@dataclass(frozen=True)
class VerifiedSlot:
    """The slot the agent serves, opened on its backend after it verified."""

    slot: str
    slot_dir: Path
    manifest: Manifest
    digest: str
    """sha256 of the verified ``manifest.json``: re-checks compare the slot's with it."""
    backend: Backend
    record: dict[str, Any]
    """The precision-choice record behind ``backend`` (``open_chosen``)."""
    hash_seconds: float
    """How long checking the signature and hashing every file took."""
    bytes_hashed: int
    golden: str
    """The golden check's verdict, one line."""
    fell_back_from: str | None = None
    """The slot that was active and failed (the agent rolled back from it), or None."""


def _hash(root: DeviceRoot, slot: str) -> tuple[Manifest, float, int]:
    """Signature and every file's sha256 and size (``verify_slot``): manifest, seconds, bytes."""
    start = time.perf_counter()
    try:
        manifest = verify_slot(root, slot)
    except (BundleError, InstallError, OSError) as exc:
        raise SlotRefused(slot, str(exc)) from None
    return manifest, time.perf_counter() - start, sum(e.size for e in manifest.files.values())


def _digest(slot_dir: Path) -> str:
    try:
        return manifest_digest(slot_dir)
    except OSError as exc:
        raise SlotRefused(slot_dir.name, f"manifest.json unreadable: {exc}") from None


def _open(
    root: DeviceRoot, slot: str, config: ChoiceConfig, log: Log, hashed: tuple[Manifest, float, int]
) -> VerifiedSlot:
    """Open the hashed slot on its chosen backend and golden-check it (``open_checked``)."""
    manifest, seconds, size = hashed
    slot_dir = root.slot(slot)
    digest = _digest(slot_dir)
    try:
        backend, record, golden = open_checked(root.engines, slot_dir, manifest, config, log)
    except ChecksFailed as exc:
        raise SlotRefused(slot, str(exc)) from None
    log(
        f"slot {slot} verified: {manifest.name} v{manifest.version}, {len(manifest.files)} files "
        f"({size / 1e6:.1f} MB) hashed in {seconds:.2f} s; golden outputs {golden.describe()}"
    )
    return VerifiedSlot(
        slot, slot_dir, manifest, digest, backend, record, seconds, size, golden.describe()
    )


def open_verified(root: DeviceRoot, config: ChoiceConfig, store: Store, log: Log) -> VerifiedSlot:
    """The active slot, opened, if its files and golden outputs verify; else the other slot,
    rolled back to, if it verifies (signature, hashes, golden). Refusals and the rollback are
    audited in ``store``.

    Raises ValueError when nothing is installed, SlotRefused (a ValueError) naming what failed
    in each slot and what to do when neither verifies, ValueError as ``open_chosen`` when the
    verified slot's model cannot be loaded at all.
    """
    active = root.active_slot()
    if active is None:
        raise ValueError(
            f"no bundle is installed in {root.path}; run 'fovea-agent install BUNDLE' first"
        )
    try:
        return _open(root, active, config, log, _hash(root, active))
    except SlotRefused as exc:
        first = exc
    log(f"refusing to serve slot {active}: {first.reason}")
    store.audit(ACTOR, "slot refused", {"slot": active, "active": True, "reason": first.reason})
    fallback, opened, start = other_slot(active), [], time.perf_counter()

    def prepare(slot_dir: Path, manifest: Manifest) -> None:
        # rollback has just checked the signature and hashes; what remains is the golden check
        size = sum(e.size for e in manifest.files.values())
        opened.append(
            _open(root, fallback, config, log, (manifest, time.perf_counter() - start, size))
        )

    try:
        result = rollback(root, prepare=prepare, reason=f"slot {active} failed: {first.reason}")
    except InstallError as exc:
        cause = exc.__cause__
        second = cause.reason if isinstance(cause, SlotRefused) else str(exc)
        store.audit(ACTOR, "slot refused", {"slot": fallback, "active": False, "reason": second})
        raise SlotRefused(
            active,
            f"{first.reason}; and the other slot cannot take over: {second}. Nothing is "
            f"served. Reinstall a bundle: fovea-agent install BUNDLE --root {root.path} (add "
            "--allow-downgrade for the same or an older version), then start the agent again",
        ) from None
    sync_history(root, store, live=result.attempt, actor=ACTOR)
    log(f"rolled back from slot {active} to slot {fallback} (v{result.manifest.version})")
    return replace(opened[0], fell_back_from=active)


@dataclass
class SlotWatch:
    """Re-hashes the served slot every ``interval_s`` (0: never) in a daemon thread; on a
    mismatch the served model is refused (readiness false, 503) and the refusal audited."""

    root: DeviceRoot
    verified: VerifiedSlot
    served: ServedModel
    store: Store
    interval_s: float
    log: Log = lambda s: None
    on_refused: Callable[[str], None] | None = None
    """Called (from the watch's thread) with the reason once the served slot is refused."""
    checked_at: str | None = None
    last_seconds: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the re-checks (nothing when ``interval_s`` is 0)."""
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="slot-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the re-checks and wait for one in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.check() is False:
                return

    def _moved(self) -> bool:
        # an install in progress, or one that switched away: the slot is not ours to judge
        try:
            return self.root.journal.exists() or self.root.active_slot() != self.verified.slot
        except InstallError:  # `current` itself is broken: the next start will say so
            return True

    def check(self) -> bool | None:
        """Re-hash the served slot now: True when it still matches, False when it does not
        (the model is refused), None when skipped (an install runs or switched slots)."""
        slot = self.verified.slot
        if self._moved():
            self.log(f"slot re-check skipped: slot {slot} is being replaced or no longer active")
            return None
        try:
            _, self.last_seconds, _ = _hash(self.root, slot)
            if _digest(self.verified.slot_dir) != self.verified.digest:
                raise SlotRefused(slot, "its manifest changed while it was served")
        except SlotRefused as exc:
            if self._moved():
                return None
            reason = (
                f"slot {slot} failed its re-check: {exc.reason}; restart the agent (it serves "
                "the other slot if that verifies) or reinstall a bundle"
            )
            self.served.refuse(reason)
            self.log(reason)
            self.store.audit(
                ACTOR, "slot refused", {"slot": slot, "serving": True, "reason": reason}
            )
            if self.on_refused is not None:
                self.on_refused(reason)
            return False
        finally:
            self.checked_at = datetime.now(UTC).isoformat(timespec="seconds")
        return True

    def status(self) -> dict[str, Any]:
        """What ``/v1/status`` shows: the slot, how it verified, the re-checks."""
        v = self.verified
        return {
            "slot": v.slot,
            "fell_back_from": v.fell_back_from,
            "hash_seconds": round(v.hash_seconds, 3),
            "bytes_hashed": v.bytes_hashed,
            "golden": v.golden,
            "interval_s": self.interval_s,
            "rechecked_at": self.checked_at,
            "recheck_seconds": self.last_seconds,
            "refused": self.served.refused,
        }


__all__ = ["SlotRefused", "SlotWatch", "VerifiedSlot", "open_verified"]
