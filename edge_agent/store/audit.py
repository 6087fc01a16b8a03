"""The append-only audit log: a chain of entries, each naming the one before it, authenticated
with the device key.

An entry's ``hash`` is HMAC-SHA256 (device key, see ``auditkey``) over the previous entry's hash
and its own fields, so nobody without the key can recompute a valid chain after editing,
deleting or reordering entries. A database made by an older agent keeps its unkeyed sha256
entries: they verify by that rule up to the ``audit.keyed`` entry its migration appended, and
from that entry on every entry must carry a valid MAC (the ``audit.keyed`` entry's MAC covers the
old head, so the old part cannot be rewritten either). The last entry's ``(seq, hash)`` is the
chain head, which the fleet keeps off the device as an anchor (``sign_head``): an anchor exposes
truncation below it and a chain rewritten with a replaced key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from edge_agent.store.auditkey import key_id
from edge_agent.store.digests import KEYED, REKEYED

GENESIS_HASH = "0" * 64
_ENTRY = "fovea-audit-v2"
_HEAD = "fovea-audit-head"


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log (``hash``: its MAC, or for pre-migration entries its sha256)."""

    seq: int
    time: str
    actor: str
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditProblem:
    """One thing verification found: its kind ("edited", "deleted", "truncated" ...), what it
    concerns (``case ID``, ``review N``, ``entry N``) and how it shows."""

    kind: str
    subject: str
    detail: str
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass(frozen=True)
class AuditCheck:
    """The outcome of verifying the chain and the rows it vouches for: ``ok`` when nothing was
    found, else every problem (``reason`` is the first; ``first_bad_seq`` the lowest entry)."""

    ok: bool
    first_bad_seq: int | None
    entries: int
    head_hash: str
    """Hash of the last entry: kept elsewhere it detects later truncation (see ``Anchor``)."""
    reason: str
    problems: tuple[AuditProblem, ...] = ()
    head_seq: int = 0


@dataclass(frozen=True)
class Anchor:
    """A chain head kept off the device: entry ``seq`` must still be there with ``hash``;
    ``time``, ``key_id`` and ``mac`` when it came from ``Store.signed_head``."""

    seq: int
    hash: str
    time: str | None = None
    key_id: str | None = None
    mac: str | None = None

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """An anchor from ``SEQ:HASH`` or the JSON of a signed head; ValueError naming it."""
        text = text.strip()
        try:
            if text.startswith("{"):
                data = json.loads(text)
                return cls(
                    int(data["seq"]), str(data["hash"]), data.get("time"), data.get("key_id"),
                    data.get("mac"),
                )  # fmt: skip
            seq, digest = text.split(":", 1)
            return cls(int(seq), digest.strip())
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"anchor {text[:80]!r} is neither SEQ:HASH nor a signed head's JSON ({e})"
            ) from None


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
    """The unkeyed sha256 of entries written before the migration to keyed entries."""
    payload = json.dumps([prev_hash, seq, time, actor, action, detail], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def entry_mac(
    key: bytes, prev_hash: str, seq: int, time: str, actor: str, action: str, detail: str
) -> str:
    """HMAC-SHA256 with the device key over the previous hash and this entry's fields."""
    payload = json.dumps([_ENTRY, prev_hash, seq, time, actor, action, detail], ensure_ascii=False)
    return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()


def last(conn: sqlite3.Connection) -> tuple[int, str]:
    """The head: (seq, hash) of the last entry, (0, GENESIS_HASH) for an empty log."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)


def append(
    conn: sqlite3.Connection,
    key: bytes,
    time: str,
    actor: str,
    action: str,
    detail: dict[str, Any],
) -> AuditEntry:
    """Append one keyed entry; call inside a write transaction so the chain cannot fork."""
    if not actor or not action:
        raise ValueError(f"an audit entry needs an actor and an action, got {actor!r}, {action!r}")
    seq, prev = last(conn)
    seq += 1
    text = canonical_detail(detail)
    digest = entry_mac(key, prev, seq, time, actor, action, text)
    conn.execute(
        "INSERT INTO audit (seq, time, actor, action, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, time, actor, action, text, prev, digest),
    )
    return AuditEntry(seq, time, actor, action, detail, prev, digest)


def head_mac(key: bytes, seq: int, digest: str, time: str) -> str:
    """HMAC-SHA256 with the device key over a chain head."""
    payload = json.dumps([_HEAD, seq, digest, time])
    return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_head(key: bytes, seq: int, digest: str, time: str) -> dict[str, Any]:
    """The chain head as the fleet keeps it: seq, hash, time, the key's id and a MAC."""
    mac = head_mac(key, seq, digest, time)
    return {"seq": seq, "hash": digest, "time": time, "key_id": key_id(key), "mac": mac}


@dataclass(frozen=True)
class Keyed:
    """An authentic entry of the keyed part of the chain (what rows are checked against)."""

    seq: int
    actor: str
    action: str
    detail: dict[str, Any]


@dataclass
class ChainWalk:
    """What walking the chain found: its head, stored hashes, authentic keyed entries, and the
    chain's own problems (altered, missing, unlinked entries; no keyed part)."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    hashes: dict[int, str] = field(default_factory=dict)
    keyed: list[Keyed] = field(default_factory=list)
    problems: list[AuditProblem] = field(default_factory=list)


def walk(conn: sqlite3.Connection, key: bytes) -> ChainWalk:
    """Walk the whole chain (call inside a read transaction) and check every entry by its rule."""
    out = ChainWalk()
    prev, expected, keyed = GENESIS_HASH, 1, False
    bad: list[tuple[int, bool]] = []
    rekeyed_at = 0
    rows = conn.execute(
        "SELECT seq, time, actor, action, detail, prev_hash, hash FROM audit ORDER BY seq"
    )
    for seq, time, actor, action, detail, prev_hash, digest in rows:
        out.entries += 1
        if seq != expected:
            span = f"entry {expected}" if seq == expected + 1 else f"entries {expected}-{seq - 1}"
            gone = f"missing from the chain (the next is {seq})"
            out.problems.append(AuditProblem("deleted", span, gone, expected))
        elif prev_hash != prev:
            out.problems.append(
                AuditProblem("unlinked", f"entry {seq}", f"does not follow entry {seq - 1}", seq)
            )
        mac = entry_mac(key, prev_hash, seq, time, actor, action, detail)
        if action == REKEYED and hmac.compare_digest(mac, digest):
            keyed, rekeyed_at = True, seq  # what came before was made with a lost key
        elif not keyed and action == KEYED and hmac.compare_digest(mac, digest):
            keyed = True
            out.problems += _rekeyed(seq, json.loads(detail))
        if keyed:
            ok = hmac.compare_digest(mac, digest)
        else:  # before the keyed part: the old unkeyed rule (the keyed opening needs its MAC)
            old = entry_hash(prev_hash, seq, time, actor, action, detail)
            ok = action not in (KEYED, REKEYED) and old == digest
        if ok and keyed:
            out.keyed.append(Keyed(seq, actor, action, json.loads(detail)))
        elif not ok:
            bad.append((seq, keyed))
        out.hashes[seq] = digest
        prev, expected = digest, seq + 1
    out.head_seq, out.head_hash = expected - 1, prev
    if rekeyed_at:
        lost = [b for b in bad if b[0] < rekeyed_at]
        bad = [b for b in bad if b[0] >= rekeyed_at]
        if lost:
            span = f"entries {lost[0][0]}-{lost[-1][0]}" if len(lost) > 1 else f"entry {lost[0][0]}"
            why = (
                f"were made with a device key that was lost (a new key from entry {rekeyed_at}, "
                "'fovea-agent audit rekey'): this device cannot check them; the fleet's anchor "
                "from before the rekey can"
            )
            out.problems.append(AuditProblem("unverifiable", span, why, lost[0][0]))
    out.problems += _altered(bad)
    if not keyed and out.entries:
        out.problems.append(
            AuditProblem(
                "rewritten", "the chain", "has no audit.keyed entry made with this device's key: "
                "it was rewritten, or the key file was replaced", None,
            )
        )  # fmt: skip
    elif not keyed:
        out.problems.append(AuditProblem("truncated", "the chain", "is empty", None))
    return out


def _rekeyed(seq: int, detail: dict[str, Any]) -> list[AuditProblem]:
    """An old unkeyed chain keyed with a key that already existed: on a device the key is made
    when its database first migrates, so the database was set back to the old schema (its
    history rewritten by the unkeyed rule and keyed again), or an old backup was restored."""
    if not detail.get("unkeyed_entries") or detail.get("new_key", True):
        return []
    why = (
        "an old unkeyed chain was keyed with a device key that already existed: the database "
        "was set back to an older schema (its history rewritten), or an old backup restored"
    )
    return [AuditProblem("rewritten", f"entry {seq}", why, seq)]


def _altered(bad: list[tuple[int, bool]]) -> list[AuditProblem]:
    """Entries that fail their rule, consecutive ones as one range."""
    runs: list[list[tuple[int, bool]]] = []
    for item in bad:
        if runs and item[0] == runs[-1][-1][0] + 1 and item[1] == runs[-1][-1][1]:
            runs[-1].append(item)
        else:
            runs.append([item])
    out = []
    for run in runs:
        first, last_seq, keyed = run[0][0], run[-1][0], run[0][1]
        span = f"entry {first}" if first == last_seq else f"entries {first}-{last_seq}"
        how = (
            "MAC does not verify with this device's key (edited, or rewritten without the key)"
            if keyed
            else "sha256 does not match (edited)"
        )
        out.append(AuditProblem("altered", span, how, first))
    return out


def check_anchor(chain: ChainWalk, anchor: Anchor, key: bytes) -> list[AuditProblem]:
    """Whether the chain still holds the anchor's entry, unchanged."""
    problems = []
    subject = f"anchor (entry {anchor.seq})"
    if anchor.mac is not None and anchor.time is not None:
        expected = head_mac(key, anchor.seq, anchor.hash, anchor.time)
        if not hmac.compare_digest(expected, anchor.mac):
            problems.append(
                AuditProblem(
                    "rewritten", subject, "was not signed with this device's audit key: the key "
                    "was replaced (and the chain rewritten with it), or it is another device's",
                    anchor.seq,
                )
            )  # fmt: skip
    stored = chain.hashes.get(anchor.seq)
    if stored is None and anchor.seq > chain.head_seq:
        problems.append(
            AuditProblem(
                "truncated", subject, f"the chain ends at entry {chain.head_seq}, below the "
                f"anchor kept off the device", anchor.seq,
            )
        )  # fmt: skip
    elif stored is None:
        problems.append(AuditProblem("deleted", subject, "the anchored entry is gone", anchor.seq))
    elif not hmac.compare_digest(stored, anchor.hash):
        problems.append(
            AuditProblem(
                "rewritten", subject, "differs from the anchor kept off the device", anchor.seq
            )
        )
    return problems
