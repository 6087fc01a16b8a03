"""The fleet inventory: devices, how to reach them, what they run, and every rollout (SQLite)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deploy.fleet.anchors import AuditHead, regression
from edge_agent.store import Migration, SqliteOptions, migrate, session

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    host TEXT PRIMARY KEY,
    record TEXT NOT NULL               -- a Device as JSON (schema_version inside)
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                -- bundle, agent, rollback
    artifact TEXT NOT NULL,
    target_version TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,              -- running, succeeded, rolled back, failed
    plan TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rollout_hosts (
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    host TEXT NOT NULL,
    stage TEXT NOT NULL,               -- canary, rest
    result TEXT NOT NULL,              -- updated, rolled back, failed, skipped, unchanged
    from_version TEXT,
    to_version TEXT,
    seconds REAL NOT NULL,
    detail TEXT NOT NULL,              -- steps with timings, errors (JSON)
    PRIMARY KEY (rollout_id, host)
);
"""
_AUDIT_HEADS = """
CREATE TABLE audit_heads (
    host TEXT PRIMARY KEY,
    head TEXT NOT NULL,                -- the device's signed audit chain head (JSON)
    received REAL NOT NULL
);
"""
_RETIRED_HEADS = """
CREATE TABLE retired_heads (
    host TEXT NOT NULL,
    head TEXT NOT NULL,                -- an anchor replaced when the device was re-keyed (JSON)
    retired REAL NOT NULL,
    reason TEXT NOT NULL
);
"""
MIGRATIONS: tuple[Migration, ...] = (_SCHEMA, _AUDIT_HEADS, _RETIRED_HEADS)
SCHEMA_VERSION = len(MIGRATIONS)  # kept in the meta table, as 'schema_version'
_OPTIONS = SqliteOptions(busy_timeout_s=30)


class TransportSpec(BaseModel):
    """How the workstation reaches a device: a local device root, or SSH."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "ssh"]
    root: str = Field(description="the device root on the device (slots, state.db, ...)")
    agent: str = Field("fovea-agent", description="the fovea-agent command on the device")
    restart: tuple[str, ...] | None = Field(
        None, description="command (argv) that restarts the agent on the device"
    )
    user: str | None = None
    address: str | None = None
    port: int = Field(22, ge=1, le=65535)
    key: str | None = Field(None, description="SSH private key on this workstation")
    known_hosts: str | None = Field(None, description="known_hosts file (default: ~/.ssh)")
    wheelhouse: str | None = Field(
        None,
        description="folder on the device with the agent's wheels (fovea-edge and its "
        "dependencies); default: `wheels` beside the venv of an absolute `agent` path",
    )
    run_as: str | None = Field(
        None,
        description="the service user that agent commands writing the device root run as "
        "(`runuser -u USER --`; a device fovea flash set up under systemd: fovea), so that "
        "precision is measured, and files are owned, as the service",
    )

    @property
    def python(self) -> str:
        """The device's Python beside its fovea-agent (for agent upgrades)."""
        agent = Path(self.agent)
        return str(agent.with_name("python")) if len(agent.parts) > 1 else "python3"

    @property
    def wheels(self) -> str | None:
        """The device's wheelhouse: ``wheelhouse``, or for ``PREFIX/venv/bin/fovea-agent`` (the
        layout ``fovea flash`` makes) ``PREFIX/wheels``, where flash keeps the wheels it
        installed; None when neither applies."""
        if self.wheelhouse is not None:
            return self.wheelhouse
        agent = Path(self.agent)
        if agent.is_absolute() and agent.parent.name == "bin" and len(agent.parts) > 3:
            return str(agent.parents[2] / "wheels")
        return None


class Device(BaseModel):
    """One device of the fleet, as the inventory knows it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    host: str = Field(min_length=1, max_length=200)
    url: str = Field(description="the agent's base URL, e.g. http://10.0.0.5:8000")
    token: str = Field(min_length=1, description="the fleet account's bearer token")
    site: str | None = None
    hardware: str | None = None
    transport: TransportSpec
    agent_version: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    backend: str | None = None
    precision: str | None = None
    last_seen: float | None = None
    status: str = "unknown"
    error: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL (e.g. http://10.0.0.5:8000)")
        return url.rstrip("/")


class HostOutcome(BaseModel):
    """What a rollout did on one host."""

    model_config = ConfigDict(extra="forbid")

    host: str
    stage: Literal["canary", "rest"]
    result: Literal["updated", "rolled back", "failed", "skipped", "unchanged"]
    from_version: str | None = None
    to_version: str | None = None
    seconds: float = 0.0
    steps: dict[str, float] = Field(default_factory=dict, description="step -> seconds")
    error: str | None = None


class Rollout(BaseModel):
    """One recorded rollout (or fleet rollback) and its hosts."""

    model_config = ConfigDict(extra="forbid")

    id: int
    kind: str
    artifact: str
    target_version: str
    started: float
    ended: float | None
    status: str
    plan: dict[str, Any]
    summary: str
    hosts: list[HostOutcome]

    @property
    def seconds(self) -> float | None:
        """Wall time of the whole rollout, once it ended."""
        return None if self.ended is None else self.ended - self.started


def private_file(path: Path) -> Path:
    """``path``, created 0600 when missing (its folder too) and made 0600 when it was not: a
    file of tokens nobody else on the workstation may read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
    return path


class InventoryError(ValueError):
    """The inventory cannot do what was asked (unknown host, unreadable record ...)."""


class Inventory:
    """The fleet's SQLite file (created 0600: it holds the fleet tokens)."""

    def __init__(self, path: Path) -> None:
        self.path = private_file(path)
        with self._db() as db:
            migrate(db, self.path, MIGRATIONS, version_table="meta")

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return session(self.path, _OPTIONS)

    # devices ---------------------------------------------------------------------------------

    def add(self, device: Device, *, replace: bool = False) -> None:
        """Add ``device``; with ``replace`` overwrite a device of the same host name."""
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            with self._db() as db:
                db.execute(f"{verb} INTO devices VALUES (?, ?)", (device.host, _dump(device)))
        except sqlite3.IntegrityError:
            raise InventoryError(
                f"{device.host} is already in {self.path}; pass --replace to change it"
            ) from None

    def save(self, device: Device) -> None:
        """Store ``device``'s current record (it must exist)."""
        with self._db() as db:
            cur = db.execute(
                "UPDATE devices SET record = ? WHERE host = ?", (_dump(device), device.host)
            )
        if cur.rowcount == 0:
            raise InventoryError(f"{device.host} is not in {self.path}; add it first")

    def remove(self, host: str) -> None:
        """Forget ``host``."""
        with self._db() as db:
            if db.execute("DELETE FROM devices WHERE host = ?", (host,)).rowcount == 0:
                raise InventoryError(f"{host} is not in {self.path}")
            db.execute("DELETE FROM audit_heads WHERE host = ?", (host,))
            db.execute("DELETE FROM retired_heads WHERE host = ?", (host,))

    def get(self, host: str) -> Device:
        """The device named ``host``."""
        with self._db() as db:
            row = db.execute("SELECT record FROM devices WHERE host = ?", (host,)).fetchone()
        if row is None:
            raise InventoryError(f"{host} is not in {self.path}; see `fovea fleet list`")
        return self._load(host, row[0])

    def devices(self, hosts: Sequence[str] | None = None, site: str | None = None) -> list[Device]:
        """Devices by host name, all of them or those named (each must exist) or of ``site``."""
        if hosts:
            return [self.get(h) for h in hosts]
        with self._db() as db:
            rows = db.execute("SELECT host, record FROM devices ORDER BY host").fetchall()
        found = [self._load(h, r) for h, r in rows]
        return [d for d in found if site is None or d.site == site]

    def _load(self, host: str, record: str) -> Device:
        try:
            return Device.model_validate_json(record)
        except ValidationError as exc:
            raise InventoryError(
                f"{self.path}: the record of {host} is unreadable: {exc}"
            ) from None

    # audit anchors ---------------------------------------------------------------------------

    def record_head(self, host: str, head: AuditHead) -> str | None:
        """Keep ``head`` as ``host``'s audit anchor; when it goes backwards from the one kept
        (see ``anchors.regression``) keep the old one and return why."""
        with self._db() as db:
            row = db.execute("SELECT head FROM audit_heads WHERE host = ?", (host,)).fetchone()
            kept = None if row is None else AuditHead.model_validate_json(row[0])
            problem = regression(kept, head)
            if problem is None:
                db.execute(
                    "INSERT OR REPLACE INTO audit_heads VALUES (?, ?, ?)",
                    (host, head.model_dump_json(), time.time()),
                )
        return problem

    def accept_rekey(self, host: str, head: AuditHead) -> AuditHead:
        """Make ``head``, signed with a new audit key (``fovea-agent audit rekey``), ``host``'s
        anchor; the old anchor is kept as retired (it still vouches for the chain before the
        rekey) and returned. InventoryError when there is no anchor or the key is the same."""
        kept = self.audit_head(host)
        if kept is None or kept.key_id == head.key_id:
            why = "no anchor kept yet" if kept is None else f"the key is still {kept.key_id}"
            raise InventoryError(f"{host}: nothing to accept: {why}")
        with self._db() as db:
            db.execute(
                "INSERT INTO retired_heads VALUES (?, ?, ?, ?)",
                (host, kept.model_dump_json(), time.time(), f"re-keyed to {head.key_id}"),
            )
            db.execute(
                "INSERT OR REPLACE INTO audit_heads VALUES (?, ?, ?)",
                (host, head.model_dump_json(), time.time()),
            )
        return kept

    def retired_heads(self, host: str) -> list[AuditHead]:
        """Anchors ``host`` had before each accepted rekey, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT head FROM retired_heads WHERE host = ? ORDER BY retired", (host,)
            ).fetchall()
        return [AuditHead.model_validate_json(r[0]) for r in rows]

    def audit_head(self, host: str) -> AuditHead | None:
        """The audit anchor kept for ``host`` (None before a poll brought one)."""
        with self._db() as db:
            row = db.execute("SELECT head FROM audit_heads WHERE host = ?", (host,)).fetchone()
        return None if row is None else AuditHead.model_validate_json(row[0])

    # rollouts --------------------------------------------------------------------------------

    def start_rollout(self, kind: str, artifact: str, version: str, plan: dict[str, Any]) -> int:
        """Record a rollout that starts now; its id."""
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO rollouts (kind, artifact, target_version, started, status, plan)"
                " VALUES (?, ?, ?, ?, 'running', ?)",
                (kind, artifact, version, time.time(), json.dumps(plan)),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def record_host(self, rollout_id: int, outcome: HostOutcome) -> None:
        """Record (or update) what rollout ``rollout_id`` did on one host."""
        detail = json.dumps({"steps": outcome.steps, "error": outcome.error})
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO rollout_hosts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rollout_id, outcome.host, outcome.stage, outcome.result,
                    outcome.from_version, outcome.to_version, outcome.seconds, detail,
                ),
            )  # fmt: skip

    def finish_rollout(self, rollout_id: int, status: str, summary: str) -> None:
        """Mark rollout ``rollout_id`` ended with ``status``."""
        with self._db() as db:
            db.execute(
                "UPDATE rollouts SET ended = ?, status = ?, summary = ? WHERE id = ?",
                (time.time(), status, summary, rollout_id),
            )

    def rollouts(self, limit: int = 20) -> list[Rollout]:
        """The latest ``limit`` rollouts, newest first, with their hosts."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM rollouts ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            return [_rollout(db, row) for row in rows]

    def rollout(self, rollout_id: int) -> Rollout:
        """One rollout by id."""
        for r in self.rollouts(limit=1_000_000):
            if r.id == rollout_id:
                return r
        raise InventoryError(f"no rollout {rollout_id} in {self.path}")


def _rollout(db: sqlite3.Connection, row: tuple[Any, ...]) -> Rollout:
    rid, kind, artifact, version, started, ended, status, plan, summary = row
    hosts = []
    for host, stage, result, from_v, to_v, seconds, detail in db.execute(
        "SELECT host, stage, result, from_version, to_version, seconds, detail"
        " FROM rollout_hosts WHERE rollout_id = ? ORDER BY stage, host",
        (rid,),
    ):
        extra = json.loads(detail)
        hosts.append(
            HostOutcome(
                host=host,
                stage=stage,
                result=result,
                from_version=from_v,
                to_version=to_v,
                seconds=seconds,
                steps=extra["steps"],
                error=extra["error"],
            )
        )
    return Rollout(
        id=rid, kind=kind, artifact=artifact, target_version=version, started=started,
        ended=ended, status=status, plan=json.loads(plan), summary=summary, hosts=hosts,
    )  # fmt: skip


def _dump(device: Device) -> str:
    return device.model_dump_json()


__all__ = [
    "Device",
    "HostOutcome",
    "Inventory",
    "InventoryError",
    "Rollout",
    "TransportSpec",
]
