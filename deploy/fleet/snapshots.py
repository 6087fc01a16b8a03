"""Each device's last ``/v1/status`` answer, kept beside the inventory for the fleet page.

The answer is stored whole (``status_snapshots`` in the inventory file); readers pick what they
show from it (drift alerts, threshold proposals) and must treat every key as optional, since
agents of different versions answer with different fields.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.store import SqliteOptions, connect, session

_TABLE = """
CREATE TABLE IF NOT EXISTS status_snapshots (
    host TEXT PRIMARY KEY,
    body TEXT NOT NULL,                -- the agent's /v1/status answer (JSON)
    received REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Snapshot:
    """A device's last status answer and when it came."""

    body: dict[str, Any]
    received: float


def record_status(inventory_path: Path, host: str, body: dict[str, Any]) -> None:
    """Keep ``body`` as ``host``'s last status answer (replacing the one before)."""
    with session(inventory_path, SqliteOptions(busy_timeout_s=30)) as db:
        db.execute(_TABLE)
        db.execute(
            "INSERT OR REPLACE INTO status_snapshots VALUES (?, ?, ?)",
            (host, json.dumps(body, allow_nan=False, default=str), time.time()),
        )


def snapshots(inventory_path: Path) -> dict[str, Snapshot]:
    """Host -> its last status answer; read-only, empty when none was ever kept. A stored
    answer that is not a JSON object is left out."""
    if not Path(inventory_path).is_file():
        return {}
    db = connect(inventory_path, SqliteOptions(read_only=True, busy_timeout_s=10))
    try:
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'status_snapshots'"
        ).fetchone()
        rows = [] if exists is None else db.execute("SELECT * FROM status_snapshots").fetchall()
    finally:
        db.close()
    found = {}
    for host, text, received in rows:
        try:
            body = json.loads(text)
        except ValueError:
            continue
        if isinstance(body, dict):
            found[str(host)] = Snapshot(body, float(received))
    return found


__all__ = ["Snapshot", "record_status", "snapshots"]
