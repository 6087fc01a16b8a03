"""The device's state: SQLite (WAL) with users, screenings, reviews, updates and an audit chain."""

from edge_agent.store.audit import GENESIS_HASH, AuditCheck, AuditEntry
from edge_agent.store.records import Case, Retention, Review, Update, User
from edge_agent.store.schema import ROLES, SCHEMA_VERSION, StoreError
from edge_agent.store.store import Store

__all__ = [
    "GENESIS_HASH",
    "ROLES",
    "SCHEMA_VERSION",
    "AuditCheck",
    "AuditEntry",
    "Case",
    "Retention",
    "Review",
    "Store",
    "StoreError",
    "Update",
    "User",
]
