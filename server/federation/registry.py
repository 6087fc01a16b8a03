"""The server's federation registry (SQLite): rounds, participants, metrics, rejections, decisions,
and the models a person validated.

One file per run directory (``registry.db``). A round re-run after a server restart replaces
that round's rows, so the registry always describes the rounds the checkpoint holds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.store import Migration, SqliteOptions, migrate, session

__all__ = ["DecisionRecord", "Participant", "Registry", "RoundRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, status TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL, ended REAL NOT NULL, sampled INTEGER NOT NULL,
    replied INTEGER NOT NULL, accepted INTEGER NOT NULL,
    train_metrics TEXT NOT NULL, eval_metrics TEXT NOT NULL, server_metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    round INTEGER NOT NULL, phase TEXT NOT NULL, node_id INTEGER NOT NULL,
    outcome TEXT NOT NULL, reason TEXT NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (round, phase, node_id));
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, round INTEGER NOT NULL,
    promoted INTEGER NOT NULL, reason TEXT NOT NULL, candidate TEXT NOT NULL,
    deployed TEXT NOT NULL, per_site TEXT NOT NULL, bundle TEXT, version INTEGER);
"""
_GATE = """
ALTER TABLE decisions ADD COLUMN gate TEXT NOT NULL DEFAULT '{}';
ALTER TABLE decisions ADD COLUMN provenance TEXT NOT NULL DEFAULT '{}';
CREATE TABLE IF NOT EXISTS validations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, digest TEXT NOT NULL,
    path TEXT NOT NULL, validated_by TEXT NOT NULL, record TEXT NOT NULL);
"""
MIGRATIONS: tuple[Migration, ...] = (_SCHEMA, _GATE)
SCHEMA_VERSION = len(MIGRATIONS)  # kept in the meta table, as 'schema_version'
_OPTIONS = SqliteOptions(busy_timeout_s=30)


def _to_sql_id(node_id: int) -> int:
    """Flower node ids are unsigned 64-bit; SQLite integers are signed (two's complement)."""
    return node_id - (1 << 64) if node_id >= 1 << 63 else node_id


def _from_sql_id(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


OUTCOMES = ("accepted", "declined", "rejected", "error", "timeout")


@dataclass(frozen=True)
class Participant:
    """What one node did in one phase (``train`` or ``evaluate``) of a round."""

    node_id: int
    phase: str
    outcome: str
    reason: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r}: use one of {', '.join(OUTCOMES)}")
        if self.phase not in ("train", "evaluate"):
            raise ValueError(f"phase {self.phase!r}: use train or evaluate")


@dataclass(frozen=True)
class RoundRecord:
    """One round: status (``done``, ``insufficient``, ``failed``), counts and weighted metrics."""

    round: int
    status: str
    started: float
    ended: float
    sampled: int
    replied: int
    accepted: int
    train_metrics: Mapping[str, float] = field(default_factory=dict)
    eval_metrics: Mapping[str, float] = field(default_factory=dict)
    server_metrics: Mapping[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class DecisionRecord:
    """A promotion decision: promoted or kept, why, and what was compared.

    ``gate`` is the gate's record (:meth:`server.federation.gate.GateResult.to_json`: reference
    models, each metric's paired difference with its interval, the margin, per-site results,
    verdict and why); ``provenance`` what the candidate was made from (``provenance.json``).
    """

    round: int
    promoted: bool
    reason: str
    candidate: Mapping[str, float]
    deployed: Mapping[str, float]
    per_site: Mapping[str, Any] = field(default_factory=dict)
    bundle: str | None = None
    version: int | None = None
    created: float = 0.0
    gate: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The decision as one JSON object (for the report and the fleet page)."""
        return {
            "round": self.round, "promoted": self.promoted, "reason": self.reason,
            "candidate": dict(self.candidate), "deployed": dict(self.deployed),
            "per_site": dict(self.per_site), "bundle": self.bundle, "version": self.version,
            "created": self.created, "gate": dict(self.gate),
            "provenance": dict(self.provenance),
        }  # fmt: skip


class Registry:
    """The registry file; every call opens, commits and closes its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            migrate(db, self.path, MIGRATIONS, version_table="meta")

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return session(self.path, _OPTIONS)

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (run config, model, state of the run)."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> dict[str, Any]:
        """Every stored meta value."""
        with self._db() as db:
            rows = db.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def record_round(self, record: RoundRecord, participants: list[Participant]) -> None:
        """Write a round and its participants, replacing an earlier try of the same round."""
        with self._db() as db:
            db.execute("DELETE FROM participants WHERE round = ?", (record.round,))
            db.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.round, record.status, record.note, record.started, record.ended,
                    record.sampled, record.replied, record.accepted,
                    json.dumps(dict(record.train_metrics)), json.dumps(dict(record.eval_metrics)),
                    json.dumps(dict(record.server_metrics)),
                ),
            )  # fmt: skip
            db.executemany(
                "INSERT OR REPLACE INTO participants VALUES (?,?,?,?,?,?)",
                [
                    (record.round, p.phase, _to_sql_id(p.node_id), p.outcome, p.reason,
                     json.dumps(dict(p.metrics)))
                    for p in participants
                ],
            )  # fmt: skip

    def rounds(self) -> list[RoundRecord]:
        """Every recorded round, in order."""
        with self._db() as db:
            rows = db.execute(
                "SELECT round, status, started, ended, sampled, replied, accepted, "
                "train_metrics, eval_metrics, server_metrics, note FROM rounds ORDER BY round"
            ).fetchall()
        return [
            RoundRecord(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6],
                json.loads(r[7]), json.loads(r[8]), json.loads(r[9]), r[10],
            )
            for r in rows
        ]  # fmt: skip

    def participants(self, round_: int | None = None) -> list[tuple[int, Participant]]:
        """(round, participant) rows, of one round or all."""
        query = "SELECT round, node_id, phase, outcome, reason, metrics FROM participants"
        args: tuple[int, ...] = ()
        if round_ is not None:
            query += " WHERE round = ?"
            args = (round_,)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY round, phase DESC, node_id", args).fetchall()
        return [
            (r[0], Participant(_from_sql_id(r[1]), r[2], r[3], r[4], json.loads(r[5])))
            for r in rows
        ]

    def rejections(self) -> list[tuple[int, Participant]]:
        """Every rejected update, with its round."""
        return [(r, p) for r, p in self.participants() if p.outcome == "rejected"]

    def record_decision(self, d: DecisionRecord) -> None:
        """Append a promotion decision."""
        with self._db() as db:
            db.execute(
                "INSERT INTO decisions (created, round, promoted, reason, candidate, deployed, "
                "per_site, bundle, version, gate, provenance) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    d.created or time.time(), d.round, int(d.promoted), d.reason,
                    json.dumps(dict(d.candidate)), json.dumps(dict(d.deployed)),
                    json.dumps(dict(d.per_site)), d.bundle, d.version,
                    json.dumps(dict(d.gate)), json.dumps(dict(d.provenance)),
                ),
            )  # fmt: skip

    def decisions(self) -> list[DecisionRecord]:
        """Every decision, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT round, promoted, reason, candidate, deployed, per_site, bundle, version, "
                "created, gate, provenance FROM decisions ORDER BY id"
            ).fetchall()
        return [
            DecisionRecord(
                r[0], bool(r[1]), r[2], json.loads(r[3]), json.loads(r[4]), json.loads(r[5]),
                r[6], r[7], r[8], json.loads(r[9]), json.loads(r[10]),
            )
            for r in rows
        ]  # fmt: skip

    def record_validation(self, model: Mapping[str, Any]) -> None:
        """Append a validated model (``ModelRef`` fields: ``path``, ``digest``,
        ``validated_by`` ...): the run's gate reference, or one a person marked validated."""
        with self._db() as db:
            db.execute(
                "INSERT INTO validations (created, digest, path, validated_by, record) "
                "VALUES (?,?,?,?,?)",
                (time.time(), str(model["digest"]), str(model["path"]),
                 str(model.get("validated_by") or ""), json.dumps(dict(model))),
            )  # fmt: skip

    def validations(self) -> list[dict[str, Any]]:
        """Every validated model recorded, oldest first; the last is the current reference."""
        with self._db() as db:
            rows = db.execute("SELECT record FROM validations ORDER BY id").fetchall()
        return [json.loads(r[0]) for r in rows]
