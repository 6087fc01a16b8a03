"""The state database's schema (PRAGMA user_version) and how a connection is opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1
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


class StoreError(ValueError):
    """A request the store refuses (unknown user or case, bad value, newer schema)."""


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL and foreign keys."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new database, or check an existing one is one we understand."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: cannot switch SQLite to WAL mode (got {mode!r})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: state database schema version {version} is newer than this agent "
                f"understands ({SCHEMA_VERSION}); upgrade fovea-agent"
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split the schema script into statements (triggers hold inner semicolons)."""
    out, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out
