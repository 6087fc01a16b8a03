"""The append-only audit log: each entry carries the sha256 of the one before it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from edge_agent.store.schema import AUDIT_TRIGGERS

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log."""

    seq: int
    time: str
    actor: str
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditCheck:
    """The outcome of verifying the chain: ``ok``, the first bad entry and why."""

    ok: bool
    first_bad_seq: int | None
    entries: int
    head_hash: str
    """Hash of the last entry: record it elsewhere to detect later truncation (``anchor``)."""
    reason: str


def entry_from_row(r: sqlite3.Row) -> AuditEntry:
    """An entry from its database row."""
    detail = json.loads(r["detail"])
    return AuditEntry(
        r["seq"], r["time"], r["actor"], r["action"], detail, r["prev_hash"], r["hash"]
    )


def canonical_detail(detail: dict[str, Any]) -> str:
    """The detail as the exact JSON text that is stored and hashed."""
    try:
        return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"audit detail must be JSON-serialisable, got {detail!r} ({e})") from e


def entry_hash(prev_hash: str, seq: int, time: str, actor: str, action: str, detail: str) -> str:
    """sha256 over the previous hash and this entry's fields, unambiguously encoded."""
    payload = json.dumps([prev_hash, seq, time, actor, action, detail], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(
    conn: sqlite3.Connection, time: str, actor: str, action: str, detail: dict[str, Any]
) -> AuditEntry:
    """Append one entry; call inside a write transaction so the chain cannot fork."""
    if not actor or not action:
        raise ValueError(f"an audit entry needs an actor and an action, got {actor!r}, {action!r}")
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS_HASH)
    text = canonical_detail(detail)
    digest = entry_hash(prev, seq, time, actor, action, text)
    conn.execute(
        "INSERT INTO audit (seq, time, actor, action, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, time, actor, action, text, prev, digest),
    )
    return AuditEntry(seq, time, actor, action, json.loads(text), prev, digest)


def _bad(seq: int, entries: int, head: str, reason: str) -> AuditCheck:
    return AuditCheck(False, seq, entries, head, reason)


def verify(conn: sqlite3.Connection, anchor: tuple[int, str] | None = None) -> AuditCheck:
    """Walk the whole chain in one read snapshot; report the first entry that does not hold."""
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    missing = sorted(set(AUDIT_TRIGGERS) - triggers)
    prev, expected, count = GENESIS_HASH, 1, 0
    anchor_seen = anchor is None
    conn.execute("BEGIN")
    try:
        rows = conn.execute(
            "SELECT seq, time, actor, action, detail, prev_hash, hash FROM audit ORDER BY seq"
        )
        for seq, time, actor, action, detail, prev_hash, digest in rows:
            count += 1
            if seq != expected:
                return _bad(expected, count, prev, f"entry {expected} is missing (next is {seq})")
            if prev_hash != prev:
                return _bad(seq, count, prev, f"entry {seq} does not link to entry {seq - 1}")
            if entry_hash(prev_hash, seq, time, actor, action, detail) != digest:
                return _bad(seq, count, prev, f"entry {seq} was altered (hash mismatch)")
            if anchor is not None and seq == anchor[0]:
                if digest != anchor[1]:
                    return _bad(seq, count, prev, f"entry {seq} differs from the recorded anchor")
                anchor_seen = True
            prev, expected = digest, seq + 1
    finally:
        conn.execute("COMMIT")
    if not anchor_seen and anchor is not None:
        return _bad(anchor[0], count, prev, f"entry {anchor[0]} (the anchor) is gone: truncated")
    if missing:
        return AuditCheck(
            False, None, count, prev, f"append-only triggers removed: {', '.join(missing)}"
        )
    return AuditCheck(True, None, count, prev, f"{count} entries, chain intact")
