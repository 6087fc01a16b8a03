"""The device's state (SQLite in WAL mode: users, screenings, reviews, updates, an audit chain),
and the one way Fovea opens SQLite files (options, schema version, migrations, backup)."""

from edge_agent.store.audit import GENESIS_HASH, AuditCheck, AuditEntry
from edge_agent.store.records import Case, Retention, Review, Update, User
from edge_agent.store.schema import ROLES, SCHEMA_VERSION, StoreError
from edge_agent.store.sqlite import (
    Migration,
    SqliteError,
    SqliteOptions,
    backup,
    connect,
    migrate,
    schema_version,
    session,
)
from edge_agent.store.store import Store

__all__ = [
    "GENESIS_HASH",
    "ROLES",
    "SCHEMA_VERSION",
    "AuditCheck",
    "AuditEntry",
    "Case",
    "Migration",
    "Retention",
    "Review",
    "SqliteError",
    "SqliteOptions",
    "Store",
    "StoreError",
    "Update",
    "User",
    "backup",
    "connect",
    "migrate",
    "schema_version",
    "session",
]
