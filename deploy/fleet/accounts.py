"""The fleet page's own accounts: names with bearer tokens, kept apart from the devices' tokens.

One SQLite file (created 0600) holds each account's name and the sha256 of its token, the
scheme the agent uses for its users; the token itself is shown once, when the account is made.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from deploy.fleet.inventory import private_file
from edge_agent.store import Migration, SqliteOptions, migrate, session

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
"""
MIGRATIONS: tuple[Migration, ...] = (_SCHEMA,)
_OPTIONS = SqliteOptions(busy_timeout_s=30)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class AccountError(ValueError):
    """An account cannot be added or removed as asked (bad or taken name, unknown name)."""


@dataclass(frozen=True)
class Account:
    """One account of the fleet page (never its token)."""

    name: str
    created: float


def token_hash(token: str) -> str:
    """The stored form of a token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class PageAccounts:
    """The accounts file of ``fovea fleet serve``."""

    def __init__(self, path: Path) -> None:
        self.path = private_file(path)
        with self._db() as db:
            migrate(db, self.path, MIGRATIONS, version_table="meta", what="fleet page accounts")

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return session(self.path, _OPTIONS)

    def add(self, name: str) -> str:
        """Create account ``name``; its bearer token (shown once: only its hash is kept)."""
        if not _NAME.match(name):
            raise AccountError(f"account name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        token = secrets.token_urlsafe(32)
        try:
            with self._db() as db:
                db.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?)", (name, token_hash(token), time.time())
                )
        except sqlite3.IntegrityError:
            raise AccountError(
                f"account {name!r} already exists in {self.path}; remove it first to replace "
                "its token"
            ) from None
        return token

    def remove(self, name: str) -> None:
        """Delete account ``name`` (its token and sessions stop working)."""
        with self._db() as db:
            if db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError(f"no account {name!r} in {self.path}")

    def accounts(self) -> list[Account]:
        """Every account, by name."""
        with self._db() as db:
            rows = db.execute("SELECT name, created FROM accounts ORDER BY name").fetchall()
        return [Account(name, created) for name, created in rows]

    def authenticate(self, token: str) -> str | None:
        """The name of the account holding ``token``, or None."""
        if not token:
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT name FROM accounts WHERE token_sha256 = ?", (token_hash(token),)
            ).fetchone()
        return None if row is None else str(row[0])

    def exists(self, name: str) -> bool:
        """Whether account ``name`` is still there."""
        with self._db() as db:
            row = db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone()
        return row is not None


__all__ = ["Account", "AccountError", "PageAccounts", "token_hash"]
