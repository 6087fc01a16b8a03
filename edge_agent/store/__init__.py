"""The device's state (SQLite in WAL mode: users, screenings, reviews, updates, an audit chain
keyed with the device's audit key that vouches for every clinical row),
and the one way Fovea opens SQLite files (options, schema version, migrations, backup)."""

from edge_agent.store.audit import GENESIS_HASH, Anchor, AuditCheck, AuditEntry, AuditProblem
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
    "Anchor",
    "AuditCheck",
    "AuditEntry",
    "AuditProblem",
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
