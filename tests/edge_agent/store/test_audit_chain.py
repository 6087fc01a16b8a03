"""The audit log: a chain of entries keyed with the device key, append-only by trigger, and
tampering with the chain itself detected (tampering with rows: test_audit_rows.py)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from edge_agent.store import GENESIS_HASH, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as s:
        for i in range(6):
            s.audit(f"user{i}", "login", {"n": i, "note": "ünïcode"})
        yield s


def _tamper(path: Path, *statements: str) -> None:
    """What an intruder with file access does: a raw connection that drops the triggers."""
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER audit_no_update")
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DROP TRIGGER audit_in_sequence")
    for s in statements:
        raw.execute(s)
    raw.commit()
    raw.close()


def test_chain_links_each_entry_to_the_previous(store: Store) -> None:
    entries = store.audit_entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6, 7]
    # a new database's chain opens keyed, by the migration that starts it
    assert (entries[0].actor, entries[0].action) == ("migration", "audit.keyed")
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    key = (store.path.parent / "keys" / "audit.key").read_bytes()
    second = entries[1]
    detail = json.dumps(second.detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    payload = json.dumps(
        ["fovea-audit-v2", second.prev_hash, 2, second.time, second.actor, second.action, detail],
        ensure_ascii=False,
    )
    assert second.hash == hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    check = store.verify_audit()
    assert check.ok and check.first_bad_seq is None and check.entries == 7
    assert check.head_hash == entries[-1].hash and check.problems == ()


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit SET actor = 'mallory' WHERE seq = 2", "DELETE FROM audit WHERE seq = 6"],
)
def test_triggers_refuse_update_and_delete(store: Store, statement: str) -> None:
    raw = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute(statement)
    raw.close()
    assert store.verify_audit().ok


def test_out_of_sequence_insert_is_refused(store: Store) -> None:
    raw = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="in sequence"):
        raw.execute(
            "INSERT INTO audit VALUES (99, 't', 'a', 'b', '{}', ?, ?)", ("0" * 64, "0" * 64)
        )
    raw.close()


def test_altered_detail_is_detected_at_its_entry(store: Store) -> None:
    _tamper(store.path, """UPDATE audit SET detail = '{"n":99}' WHERE seq = 3""")
    check = store.verify_audit()
    assert not check.ok and check.first_bad_seq == 3
    assert "altered" in check.reason


def test_rehashed_entry_breaks_the_next_link(store: Store) -> None:
    entry = store.audit_entries()[3]  # seq 4: the intruder recomputes its hash after editing
    forged = hashlib.sha256(b"anything").hexdigest()
    _tamper(store.path, f"UPDATE audit SET hash = '{forged}' WHERE seq = {entry.seq}")
    check = store.verify_audit()
    assert not check.ok and check.first_bad_seq == 4


def test_deleted_middle_entry_is_detected(store: Store) -> None:
    _tamper(store.path, "DELETE FROM audit WHERE seq = 2")
    check = store.verify_audit()
    assert not check.ok and check.first_bad_seq == 2 and "missing" in check.reason


def test_truncation_is_detected_against_an_anchor(store: Store) -> None:
    head = store.verify_audit()
    anchor = (head.entries, head.head_hash)
    assert store.verify_audit(anchor).ok
    _tamper(store.path, "DELETE FROM audit WHERE seq >= 5")
    check = store.verify_audit(anchor)
    assert not check.ok and check.first_bad_seq == 7 and "truncated" in check.reason


def test_dropped_triggers_alone_fail_verification(store: Store) -> None:
    _tamper(store.path)
    check = store.verify_audit()
    assert not check.ok and "triggers removed" in check.reason and check.first_bad_seq is None


def test_actions_of_the_store_are_audited(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as s:
        s.add_user("doc", "clinician", actor="admin")
        case = s.record_screening(user="tech", model_version=1, request={}, result={})
        s.record_review(case, user="doc", grade=2)
        actions = [(e.actor, e.action, e.detail.get("case_id")) for e in s.audit_entries()]
    assert actions == [
        ("migration", "audit.keyed", None),
        ("admin", "user.add", None),
        ("tech", "screen", case),
        ("doc", "review", case),
    ]
