"""One truth for updates: state.db's update history (and audit) follows ``updates.jsonl``.

The install journal (``updates.jsonl``) is written inside the install, before and after the
slot switch; state.db is written by whoever ran the install once it returned. A kill between
the two leaves the device serving a version that state.db never heard of. ``sync_history``
copies every install, rollback and interrupted install that state.db lacks into it (each row
audited, and marked ``reconciled`` unless it is the attempt just made), matched by attempt id
so that running it again adds nothing.
"""

from __future__ import annotations

import fcntl
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_agent.install.history import UpdateRecord, read_updates
from edge_agent.install.layout import DeviceRoot
from edge_agent.store import Store, Update

DB_STATUS = {"installed": "installed", "rolled-back": "rolled back", "interrupted": "interrupted"}
"""The journal statuses mirrored in state.db, and how state.db spells them."""
RECONCILED_ACTOR = "reconcile"
"""The audit actor of rows added after the fact (a restart found them only in the journal)."""


def _key(record: UpdateRecord) -> str:
    # records of old agents may lack an attempt id: their time identifies them as well
    return record.attempt or f"time:{record.time.isoformat()}"


@contextmanager
def _history_lock(root: DeviceRoot) -> Iterator[None]:
    """Serialise syncs (the CLI after an install, the agent at start): check, then insert."""
    fd = os.open(root.path / ".history.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sync_history(
    root: DeviceRoot | Path, store: Store, *, live: str | None = None, actor: str = "installer"
) -> list[Update]:
    """Add to ``store`` each install, rollback and interrupted install of ``updates.jsonl`` it
    has no row for; the rows added, oldest first.

    ``live``: the attempt that just ran (recorded under ``actor``); any other missing record is
    recorded as reconciled (detail ``reconciled: true``, audit actor ``reconcile``). A row is
    matched by its ``detail.attempt``; rows written before attempts were recorded match by
    version, slot and status.
    """
    root = root if isinstance(root, DeviceRoot) else DeviceRoot(Path(root))
    added: list[Update] = []
    with _history_lock(root):
        rows = store.updates()
        known = {str(r.detail["attempt"]) for r in rows if "attempt" in r.detail}
        legacy = Counter(
            (r.to_version, r.slot, r.status) for r in rows if "attempt" not in r.detail
        )
        for record in read_updates(root.updates_log):
            status, key = DB_STATUS.get(record.status), _key(record)
            if status is None or key in known:
                continue
            known.add(key)
            slot = record.slot or "-"
            if legacy[(record.to_version, slot, status)] > 0:
                legacy[(record.to_version, slot, status)] -= 1
                continue
            reconciled = key != live
            detail: dict[str, object] = {
                "attempt": key,
                "action": record.action,
                "journal": record.detail,
                "journal_time": record.time.isoformat(),
            }
            if reconciled:
                detail["reconciled"] = True
            added.append(
                store.record_update(
                    from_version=record.from_version,
                    to_version=record.to_version,
                    slot=slot,
                    status=status,
                    detail=detail,
                    actor=RECONCILED_ACTOR if reconciled else actor,
                )
            )
    return added


def served_version(store: Store) -> int | None:
    """The version state.db's history says is being served: the last install or rollback's."""
    done = [u for u in store.updates() if u.status in ("installed", "rolled back")]
    return done[-1].to_version if done else None


__all__ = ["DB_STATUS", "RECONCILED_ACTOR", "served_version", "sync_history"]
