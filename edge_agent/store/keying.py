"""The migration to a keyed chain (schema 3): how an existing state database starts proving
itself, and how a new one starts.

The step appends one ``audit.keyed`` entry (actor ``migration``) whose MAC covers the old chain's
head, how many unkeyed entries precede it, and how many rows existed; the old entries keep
verifying by their own unkeyed rule up to it. Then every row that existed before gets an entry of
its own (actor ``migration``, one per screening, review and kept image, with its content digest)
rather than one digest over all of them, so a later edit of an old row is named like any other:
by its case or review id. A new database runs the same step with nothing before it, so its chain
opens with the ``audit.keyed`` entry at seq 1.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from edge_agent.store import audit as _audit
from edge_agent.store import digests as _d

ACTOR = "migration"


def keyed_chain(
    key: bytes,
    now: Callable[[], str],
    cases_dir: Path,
    schema: int,
    new_key: bool,
    action: str = _d.KEYED,
) -> Callable[[sqlite3.Connection], None]:
    """The migration step that starts the keyed chain in the database it is given
    (``new_key``: the key was made for it; see ``audit.walk`` on old chains keyed by a key
    that already existed)."""

    def step(conn: sqlite3.Connection) -> None:
        time = now()
        seq, head = _audit.last(conn)
        tables = ("screenings", "reviews", "case_images")
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        detail = {
            "schema": schema, "unkeyed_entries": seq, "unkeyed_head": head, "rows": counts,
            "new_key": new_key,
        }  # fmt: skip
        _audit.append(conn, key, time, ACTOR, action, detail)
        for row in conn.execute(f"SELECT {_d.SCREENING_COLUMNS} FROM screenings ORDER BY rowid"):
            entry = _d.screening_entry(row[0], row[3], _d.screening_row_digest(row))
            _audit.append(conn, key, time, ACTOR, _d.SCREEN, entry)
        for row in conn.execute(f"SELECT {_d.REVIEW_COLUMNS} FROM reviews ORDER BY id"):
            labels = None if row[4] is None else list(json.loads(row[4]))
            digest = _d.review_row_digest(row)
            entry = _d.review_entry(row[0], row[1], row[3], bool(row[5]), labels, digest)
            _audit.append(conn, key, time, ACTOR, _d.REVIEW, entry)
        images = conn.execute("SELECT case_id, file FROM case_images ORDER BY saved, rowid")
        for case_id, name in images.fetchall():
            try:
                sha: str | None = _d.image_digest((cases_dir / name).read_bytes())
            except OSError:
                sha = None  # already gone: nothing to vouch for
            _audit.append(conn, key, time, ACTOR, _d.IMAGE, {"case_id": case_id, "sha256": sha})

    return step


def keyed_already(conn: sqlite3.Connection) -> bool:
    """Whether the database's chain was keyed before (so its key file must exist)."""
    try:
        row = conn.execute(
            "SELECT 1 FROM audit WHERE action IN (?, ?) LIMIT 1", (_d.KEYED, _d.REKEYED)
        ).fetchone()
    except sqlite3.OperationalError:  # a new database: no audit table yet
        return False
    return row is not None


def lost_key_message(key: Path, db: Path, rekey: bool) -> str:
    """Why the store will not open: its key file is missing (or, asked to rekey, is not)."""
    if rekey:
        return f"the audit key {key} exists (or {db} was never keyed): there is nothing to rekey"
    return (
        f"the audit key {key} is missing, but {db} holds a chain keyed with it: restore the key "
        "file from the device's backup; if it is lost for good, start a new key with "
        "'fovea-agent audit rekey --root ROOT' (this device then cannot check the entries made "
        "with the lost key; the fleet's anchor from before still can)"
    )
