"""SQLite files opened one way: connection options and pragmas, schema version, ordered
migrations, and a consistent copy of a live database.

Every SQLite user in Fovea (the device's state database, the fleet inventory, the federation
registry, reports reading a device's database) opens its file through ``connect`` or ``session``
with the ``SqliteOptions`` it needs, and brings its schema up to date with ``migrate``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Migration = str | Callable[[sqlite3.Connection], None]
"""One schema step: an SQL script (statements run in order) or a function given the connection."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
VERSION_KEY = "schema_version"


class SqliteError(ValueError):
    """A database this program must not use as it is (newer schema, no WAL, failed copy)."""


@dataclass(frozen=True)
class SqliteOptions:
    """How to open a database file; the defaults are Python's ``sqlite3.connect`` defaults.

    ``autocommit``: no implicit transactions (``isolation_level=None``); the caller issues
    ``BEGIN``/``COMMIT`` itself. ``rows``: rows as ``sqlite3.Row`` (by name and index).
    ``read_only``: open with ``mode=ro`` (the file must exist; writes fail).
    """

    busy_timeout_s: float = 5.0
    autocommit: bool = False
    check_same_thread: bool = True
    rows: bool = False
    foreign_keys: bool = False
    synchronous: Synchronous | None = None
    read_only: bool = False

    def __post_init__(self) -> None:
        if self.busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {self.busy_timeout_s}")


def connect(path: Path | str, options: SqliteOptions | None = None) -> sqlite3.Connection:
    """A connection to the database file ``path`` opened with ``options`` and its pragmas."""
    options = options or SqliteOptions()
    target: str | Path = Path(path)
    if options.read_only:
        target = f"{Path(path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(
        target,
        timeout=options.busy_timeout_s,
        check_same_thread=options.check_same_thread,
        uri=options.read_only,
    )
    if options.autocommit:
        conn.isolation_level = None
    if options.rows:
        conn.row_factory = sqlite3.Row
    if options.foreign_keys:
        conn.execute("PRAGMA foreign_keys = ON")
    if options.synchronous is not None:
        conn.execute(f"PRAGMA synchronous = {options.synchronous}")
    return conn


@contextmanager
def session(path: Path | str, options: SqliteOptions | None = None) -> Iterator[sqlite3.Connection]:
    """A connection for one unit of work: committed when the block ends, rolled back on an
    exception, closed either way."""
    conn = connect(path, options)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def schema_version(conn: sqlite3.Connection, version_table: str | None = None) -> int:
    """The database's schema version: ``PRAGMA user_version``, or with ``version_table`` the
    ``schema_version`` row of that ``(key, value)`` table (0 when it has none yet)."""
    if version_table is None:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (version_table,)
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute(
        f"SELECT value FROM {version_table} WHERE key = ?", (VERSION_KEY,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def migrate(
    conn: sqlite3.Connection,
    path: Path | str,
    migrations: Sequence[Migration],
    *,
    version_table: str | None = None,
    journal_mode: str | None = None,
    what: str = "database",
    reader: str = "program",
    upgrade: str = "Fovea",
) -> int:
    """Bring the database to version ``len(migrations)`` in one write transaction; that version.

    Migration ``i`` takes the schema from version ``i`` to ``i + 1``; only the missing ones run.
    The version is kept where ``schema_version`` reads it. ``journal_mode`` (e.g. ``"WAL"``) is
    switched to first, and SqliteError raised when SQLite refuses it. A database newer than
    ``migrations`` is refused with SqliteError naming ``path`` and what to ``upgrade``.
    """
    if journal_mode is not None:
        mode = conn.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0]
        if str(mode).lower() != journal_mode.lower():
            raise SqliteError(f"{path}: cannot switch SQLite to {journal_mode} mode (got {mode!r})")
    latest = len(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn, version_table)
        if version > latest:
            raise SqliteError(
                f"{path}: {what} schema version {version} is newer than this "
                f"{reader} understands ({latest}); upgrade {upgrade}"
            )
        for step in migrations[version:]:
            if callable(step):
                step(conn)
            else:
                for statement in statements(step):
                    conn.execute(statement)
        if version < latest:
            _set_version(conn, latest, version_table)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return latest


def statements(script: str) -> list[str]:
    """The SQL statements of ``script`` in order (a trigger's inner semicolons kept)."""
    out, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out


def backup(conn: sqlite3.Connection, dest: Path) -> Path:
    """Write a consistent copy of ``conn``'s database to ``dest`` (atomically, rollback
    journal, integrity-checked) while others keep writing; ``dest``.

    Raises SqliteError when the copy fails its integrity check (``dest`` is then untouched).
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    target = sqlite3.connect(tmp)
    try:
        conn.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise SqliteError(f"backup {dest} failed its integrity check: {check}")
    except BaseException:
        target.close()
        tmp.unlink(missing_ok=True)
        raise
    target.close()
    os.replace(tmp, dest)
    return dest


def _set_version(conn: sqlite3.Connection, version: int, version_table: str | None) -> None:
    if version_table is None:
        conn.execute(f"PRAGMA user_version = {int(version)}")
    else:
        conn.execute(
            f"INSERT OR REPLACE INTO {version_table} (key, value) VALUES (?, ?)",
            (VERSION_KEY, str(version)),
        )


__all__ = [
    "Migration",
    "SqliteError",
    "SqliteOptions",
    "backup",
    "connect",
    "migrate",
    "schema_version",
    "session",
    "statements",
]
