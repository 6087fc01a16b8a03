"""Clinical rows checked against the chain: every screening, review and kept case image must
match the digest its authentic entry holds.

What is reported, by name and id: a row whose content differs from its entry (edited), a row
that holds another row's entered content (swapped, reordered or renumbered: e.g. an older review
moved to a later id, where it would count as the latest), an entry whose row is gone (deleted;
an image removed by retention is not, its removal is an entry of its own), and a row without an
entry (inserted outside the agent).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.store import audit as _audit
from edge_agent.store import digests as _d
from edge_agent.store.audit import Anchor, AuditCheck, AuditProblem, Keyed
from edge_agent.store.schema import AUDIT_TRIGGERS

Entered = tuple[int, str | None]
"""(seq of the entry, sha256 it holds)."""


@dataclass
class Ledger:
    """What the authentic keyed entries say each row must be."""

    screenings: dict[str, Entered] = field(default_factory=dict)
    reviews: dict[int, Entered] = field(default_factory=dict)
    images: dict[str, Entered] = field(default_factory=dict)
    removed: dict[str, set[str]] = field(default_factory=dict)
    """Ids that retention removed, by table (``images``; ``screenings`` and ``reviews`` too
    should retention ever delete rows)."""


@dataclass
class Trusted:
    """Rows that verify: screenings by case id, reviews by id, images' entered sha256 by case."""

    screenings: set[str] = field(default_factory=set)
    reviews: set[int] = field(default_factory=set)
    images: dict[str, str] = field(default_factory=dict)


def ledger(keyed: list[Keyed]) -> Ledger:
    """The ledger of the keyed entries, applied in order (a later image entry replaces one)."""
    out = Ledger()
    for e in keyed:
        d = e.detail
        if e.action == _d.SCREEN and "sha256" in d:
            out.screenings[str(d["case_id"])] = (e.seq, d["sha256"])
        elif e.action == _d.REVIEW and "review_id" in d:
            out.reviews[int(d["review_id"])] = (e.seq, d["sha256"])
        elif e.action == _d.IMAGE:
            out.images[str(d["case_id"])] = (e.seq, d.get("sha256"))
            out.removed.get("images", set()).discard(str(d["case_id"]))
        elif e.action == _d.RETENTION:
            for table, ids in d.items():
                out.removed.setdefault(table, set()).update(str(i) for i in ids)
                if table == "images":
                    for case_id in ids:
                        out.images.pop(str(case_id), None)
    return out


def _compare(
    what: str,
    key: Any,
    digest: str | None,
    entered: dict[Any, Entered],
    by_digest: dict[str, Any],
) -> AuditProblem | None:
    """The problem of one row (None when it matches its entry)."""
    subject = f"{what} {key}"
    entry = entered.get(key)
    if entry is not None and entry[1] == digest:
        return None
    other = by_digest.get(digest) if digest is not None else None
    if other is not None and other != key:
        seq = entered[other][0]
        detail = f"holds the content entered for {what} {other} (entry {seq})"
        return AuditProblem("swapped", subject, detail, seq)
    if entry is None:
        detail = "has no audit entry: inserted outside the agent"
        return AuditProblem("not entered", subject, detail)
    return AuditProblem("edited", subject, f"differs from its audit entry {entry[0]}", entry[0])


def _gone(
    what: str, entered: dict[Any, Entered], seen: set[Any], removed: set[str]
) -> list[AuditProblem]:
    return [
        AuditProblem("deleted", f"{what} {k}", f"entered at entry {seq}, its row is gone", seq)
        for k, (seq, _) in sorted(entered.items(), key=lambda kv: kv[1][0])
        if k not in seen and str(k) not in removed
    ]


def check_rows(
    conn: sqlite3.Connection, book: Ledger, cases_dir: Path, *, hash_files: bool = True
) -> tuple[list[AuditProblem], Trusted]:
    """Every clinical row against ``book`` (inside the walk's read transaction)."""
    trusted = Trusted()
    removed = book.removed
    screenings = conn.execute(f"SELECT {_d.SCREENING_COLUMNS} FROM screenings")
    problems = _table(
        "case",
        ((row[0], _d.screening_row_digest(row)) for row in screenings),
        book.screenings,
        trusted.screenings,
        removed.get("screenings", set()),
    )
    reviews = conn.execute(f"SELECT {_d.REVIEW_COLUMNS} FROM reviews ORDER BY id")
    problems += _table(
        "review",
        ((int(row[0]), _d.review_row_digest(row)) for row in reviews),
        book.reviews,
        trusted.reviews,
        removed.get("reviews", set()),
    )
    problems += _images(conn, book, trusted, cases_dir, hash_files)
    return problems, trusted


def _table(
    what: str,
    rows: Iterable[tuple[Any, str | None]],
    entered: dict[Any, Entered],
    trusted: set[Any],
    removed: set[str],
) -> list[AuditProblem]:
    """One table's rows (key, content digest) against their entries: those that verify go into
    ``trusted``; the problems are returned, rows whose entry has no row among them."""
    problems: list[AuditProblem] = []
    index = {sha: k for k, (_, sha) in entered.items() if sha}
    seen: set[Any] = set()
    for key, digest in rows:
        seen.add(key)
        found = _compare(what, key, digest, entered, index)
        if found is not None:
            problems.append(found)
        else:
            trusted.add(key)
    return problems + _gone(what, entered, seen, removed)


def _images(
    conn: sqlite3.Connection, book: Ledger, trusted: Trusted, cases_dir: Path, hash_files: bool
) -> list[AuditProblem]:
    problems: list[AuditProblem] = []
    seen: set[Any] = set()
    for case_id, name in conn.execute("SELECT case_id, file FROM case_images"):
        seen.add(case_id)
        subject = f"image of case {case_id}"
        entry = book.images.get(case_id)
        if entry is None:
            detail = "has no audit entry: inserted outside the agent"
            problems.append(AuditProblem("not entered", subject, detail))
            continue
        if entry[1] is None:  # its file was already missing when the chain was keyed
            continue
        trusted.images[case_id] = entry[1]
        if not hash_files:
            continue
        try:
            digest = _d.image_digest((cases_dir / name).read_bytes())
        except OSError:
            detail = f"its file {cases_dir / name} is gone (entered at entry {entry[0]})"
            problems.append(AuditProblem("deleted", subject, detail, entry[0]))
            continue
        if digest != entry[1]:
            detail = f"file {name} differs from its audit entry {entry[0]}"
            problems.append(AuditProblem("edited", subject, detail, entry[0]))
    return problems + _gone("image of case", book.images, seen, book.removed.get("images", set()))


def verify(
    conn: sqlite3.Connection, key: bytes, cases_dir: Path, anchor: Anchor | None = None
) -> AuditCheck:
    """The chain and every clinical row, in one read snapshot; every problem found."""
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    missing = sorted(set(AUDIT_TRIGGERS) - triggers)
    conn.execute("BEGIN")
    try:
        chain = _audit.walk(conn, key)
        problems = sorted(chain.problems, key=lambda p: (p.seq is None, p.seq or 0))
        if anchor is not None:
            problems += _audit.check_anchor(chain, anchor, key)
        found, _ = check_rows(conn, ledger(chain.keyed), cases_dir)
        problems += found
    finally:
        conn.execute("COMMIT")
    if missing:
        detail = f"append-only triggers removed: {', '.join(missing)}"
        problems.append(AuditProblem("unprotected", "the audit table", detail))
    first = min((p.seq for p in problems if p.seq is not None), default=None)
    reason = str(problems[0]) if problems else f"{chain.entries} entries, chain intact"
    return AuditCheck(
        not problems, first, chain.entries, chain.head_hash, reason, tuple(problems),
        chain.head_seq,
    )  # fmt: skip


def trusted(conn: sqlite3.Connection, key: bytes, cases_dir: Path) -> Trusted:
    """The rows that match their authentic entries (image files are checked by the reader)."""
    conn.execute("BEGIN")
    try:
        chain = _audit.walk(conn, key)
        _, out = check_rows(conn, ledger(chain.keyed), cases_dir, hash_files=False)
    finally:
        conn.execute("COMMIT")
    return out
