"""state.db's update history follows the install journal (updates.jsonl): once, audited."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_agent.install import (
    DeviceRoot,
    install,
    read_updates,
    recover,
    rollback,
    served_version,
    sync_history,
)
from edge_agent.store import Store


def test_installs_only_the_journal_knows_are_added_once_and_audited(
    device: DeviceRoot, make_bundle: Callable[[int], Path]
) -> None:
    install(device, make_bundle(1))
    install(device, make_bundle(2))  # as a crash after the switch leaves it: journal only
    with Store(device.state_db) as store:
        assert store.updates() == []
        recover(device, store)
        rows = store.updates()
        assert [(r.status, r.to_version, r.slot) for r in rows] == [
            ("installed", 1, "a"),
            ("installed", 2, "b"),
        ]
        assert all(r.detail["reconciled"] is True for r in rows)
        journal = [r.attempt for r in read_updates(device.updates_log)]
        assert [r.detail["attempt"] for r in rows] == journal
        assert served_version(store) == 2
        audited = [e for e in store.audit_entries() if e.action == "update"]
        assert [e.actor for e in audited] == ["reconcile", "reconcile"]
        assert store.verify_audit().ok

        recover(device, store)  # every later start: nothing new
        assert sync_history(device, store) == []
        assert len(store.updates()) == 2


def test_the_attempt_just_made_is_not_marked_reconciled(
    device: DeviceRoot, make_bundle: Callable[[int], Path]
) -> None:
    install(device, make_bundle(1))
    result = install(device, make_bundle(2))
    with Store(device.state_db) as store:
        added = sync_history(device, store, live=result.attempt)
        assert [u.detail.get("reconciled", False) for u in added] == [True, False]
        back = rollback(device, reason="test")
        (row,) = sync_history(device, store, live=back.attempt)
        assert (row.status, row.to_version, row.detail["journal"]) == ("rolled back", 1, "test")
        assert served_version(store) == 1


def test_rows_written_before_attempt_ids_are_not_duplicated(
    device: DeviceRoot, make_bundle: Callable[[int], Path]
) -> None:
    install(device, make_bundle(1))
    install(device, make_bundle(2))
    with Store(device.state_db) as store:
        # what the CLI wrote before it recorded attempt ids: v1's row, v2's lost to a crash
        store.record_update(
            from_version=None, to_version=1, slot="a", status="installed", detail={"bundle": "x"}
        )
        (added,) = sync_history(device, store)
        assert (added.to_version, added.detail["reconciled"]) == (2, True)
        assert len(store.updates()) == 2
