"""The device root: A/B slots, the ``current`` symlink swapped atomically, keys and state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge_agent.bundle import Keyring, fsync_dir

SLOTS: tuple[str, str] = ("a", "b")


class InstallError(RuntimeError):
    """An install or rollback that could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class DeviceRoot:
    """Paths of a device root (``slots/a``, ``slots/b``, ``current`` -> ``slots/<x>`` ...)."""

    path: Path

    @property
    def slots(self) -> Path:
        """The directory holding both slots (and, briefly, staging directories)."""
        return self.path / "slots"

    def slot(self, name: str) -> Path:
        """The directory of slot ``name`` ('a' or 'b')."""
        if name not in SLOTS:
            raise InstallError(f"unknown slot {name!r}; slots are {SLOTS}")
        return self.slots / name

    @property
    def current(self) -> Path:
        """The symlink naming the active slot."""
        return self.path / "current"

    @property
    def engines(self) -> Path:
        """Built engines, keyed by bundle digest, GPU, TensorRT version and precision."""
        return self.path / "engines"

    @property
    def keys(self) -> Keyring:
        """Trusted (``keys/trusted/*.pub``) and revoked (``keys/revoked/*.pub``) keys."""
        return Keyring.in_dir(self.path / "keys")

    @property
    def audit_key(self) -> Path:
        """The device key (32 random bytes, mode 0600) that authenticates the audit chain of
        ``state_db``; outside the database, so a copy or edit of the database lacks it."""
        return self.path / "keys" / "audit.key"

    @property
    def state_db(self) -> Path:
        """The agent's SQLite database."""
        return self.path / "state.db"

    @property
    def config(self) -> Path:
        """The agent's configuration file (owned by the service)."""
        return self.path / "agent.yaml"

    @property
    def busy_file(self) -> Path:
        """Touched while the agent infers; federated training on the device pauses meanwhile."""
        return self.path / "run" / "busy"

    @property
    def updates_log(self) -> Path:
        """The update history, one JSON object per line."""
        return self.path / "updates.jsonl"

    @property
    def lock(self) -> Path:
        """The lock file held while an install or rollback runs."""
        return self.path / ".install.lock"

    @property
    def journal(self) -> Path:
        """The record of an install in progress (present only while one runs or crashed)."""
        return self.path / ".install.journal.json"

    def ensure(self) -> DeviceRoot:
        """Create the root's directories if missing; return self."""
        for directory in (self.slots, self.engines, self.keys.trusted, self.keys.revoked):
            assert directory is not None
            directory.mkdir(parents=True, exist_ok=True)
        return self

    def active_slot(self) -> str | None:
        """The slot ``current`` points to, or None before the first install."""
        if not self.current.is_symlink():
            if self.current.exists():
                raise InstallError(f"{self.current} is not a symlink; move it away and reinstall")
            return None
        target = os.readlink(self.current)
        for name in SLOTS:
            if target == f"slots/{name}":
                return name
        raise InstallError(f"{self.current} points to {target!r}, not slots/a or slots/b")

    def switch_to(self, name: str) -> None:
        """Point ``current`` at slot ``name`` atomically (temp symlink, rename, fsync)."""
        self.slot(name)
        tmp = self.path / ".current.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(f"slots/{name}", tmp)
        os.replace(tmp, self.current)
        fsync_dir(self.path)


def other_slot(name: str | None) -> str:
    """The slot an install writes to: the inactive one ('a' when none is active)."""
    return "a" if name in (None, "b") else "b"
