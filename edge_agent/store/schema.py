"""The state database's schema and migrations (PRAGMA user_version), and how it is opened."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from edge_agent.store import sqlite as _sqlite
from edge_agent.store.sqlite import Migration, SqliteError, SqliteOptions

ROLES: tuple[str, ...] = ("technician", "clinician", "admin")
AUDIT_TRIGGERS: tuple[str, ...] = ("audit_no_update", "audit_no_delete", "audit_in_sequence")

_SCHEMA = f"""
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ({", ".join(repr(r) for r in ROLES)})),
    token_sha256 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE screenings (
    case_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    user TEXT NOT NULL,
    model_version INTEGER,
    request TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX screenings_created ON screenings (created);
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES screenings (case_id),
    user TEXT NOT NULL,
    grade INTEGER CHECK (grade IS NULL OR grade BETWEEN 0 AND 4),
    gradable INTEGER NOT NULL,
    comment TEXT NOT NULL,
    created TEXT NOT NULL,
    CHECK ((gradable = 1) = (grade IS NOT NULL))
);
CREATE INDEX reviews_case ON reviews (case_id, id);
CREATE TABLE updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER,
    slot TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE case_images (
    case_id TEXT PRIMARY KEY REFERENCES screenings (case_id),
    file TEXT NOT NULL,
    saved TEXT NOT NULL
);
CREATE INDEX case_images_saved ON case_images (saved);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE refused'); END;
CREATE TRIGGER audit_in_sequence BEFORE INSERT ON audit
WHEN NEW.seq != (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit)
BEGIN SELECT RAISE(ABORT, 'audit entries must be appended in sequence'); END;
"""


_REVIEW_LABELS = """
CREATE TABLE reviews_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES screenings (case_id),
    user TEXT NOT NULL,
    grade INTEGER CHECK (grade IS NULL OR grade >= 0),
    labels TEXT,
    gradable INTEGER NOT NULL,
    comment TEXT NOT NULL,
    created TEXT NOT NULL,
    CHECK ((gradable = 1) = (grade IS NOT NULL OR labels IS NOT NULL))
);
INSERT INTO reviews_v2 (id, case_id, user, grade, labels, gradable, comment, created)
SELECT id, case_id, user, grade, NULL, gradable, comment, created FROM reviews;
DROP TABLE reviews;
ALTER TABLE reviews_v2 RENAME TO reviews;
CREATE INDEX reviews_case ON reviews (case_id, id);
"""
"""Reviews in any task's classes: ``grade`` is the class index (single-label kinds, any number
of classes), ``labels`` the class names as a JSON list (a multilabel review's findings)."""

MIGRATIONS: tuple[Migration, ...] = (_SCHEMA, _REVIEW_LABELS)
"""The state database's schema steps before the last, which starts the keyed audit chain and
needs the device key (``keying.keyed_chain``, given to ``migrate``)."""
SCHEMA_VERSION = len(MIGRATIONS) + 1

OPTIONS = SqliteOptions(
    autocommit=True, check_same_thread=False, rows=True, foreign_keys=True, synchronous="FULL"
)
"""How the store opens the state database (transactions are explicit; one connection a thread)."""


class StoreError(ValueError):
    """A request the store refuses (unknown user or case, bad value, newer schema)."""


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with foreign keys on."""
    return _sqlite.connect(path, replace(OPTIONS, busy_timeout_s=busy_timeout_s))


def migrate(conn: sqlite3.Connection, path: Path, keyed: Migration) -> None:
    """Switch to WAL and create the schema in a new database, or bring an existing one up to
    date (``keyed``: the step that starts the keyed audit chain); StoreError when it is newer
    than this agent understands."""
    try:
        _sqlite.migrate(
            conn,
            path,
            (*MIGRATIONS, keyed),
            journal_mode="WAL",
            what="state database",
            reader="agent",
            upgrade="fovea-agent",
        )
    except SqliteError as exc:
        raise StoreError(str(exc)) from None
