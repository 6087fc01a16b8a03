"""The keyed chain: the device key (0600, outside state.db), rewriting with recomputed hashes,
truncation, anchors kept off the device, and an older database migrating in place."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.install import DeviceRoot
from edge_agent.store import Anchor, Store, StoreError
from edge_agent.store.audit import entry_hash, entry_mac

Rehash = Callable[[str, int, str, str, str, str], str]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    with Store(path) as s:
        s.add_user("doc", "clinician")
        for i in range(4):
            case = s.record_screening(user="tech", model_version=1, request={}, result={"i": i})
            s.record_review(case, user="doc", grade=i % 5)
    return path  # 1 + 1 + 8 entries


def _problems(path: Path, anchor: Anchor | None = None) -> set[tuple[str, str]]:
    with Store(path) as s:
        return {(p.kind, p.subject) for p in s.verify_audit(anchor).problems}


def _head(path: Path) -> Anchor:
    with Store(path) as s:
        return Anchor.parse(json.dumps(s.signed_head()))


def _drop_triggers(raw: sqlite3.Connection) -> None:
    for name in ("audit_no_update", "audit_no_delete", "audit_in_sequence"):
        raw.execute(f"DROP TRIGGER {name}")


def _recreate_triggers(raw: sqlite3.Connection) -> None:
    from edge_agent.store.schema import MIGRATIONS
    from edge_agent.store.sqlite import statements

    for statement in statements(str(MIGRATIONS[0])):
        if statement.startswith("CREATE TRIGGER"):
            raw.execute(statement)


def _rewrite(path: Path, from_seq: int, rehash: Rehash, edit: str | None = None) -> None:
    """Edit a row and its entry's digest, then recompute every hash from ``from_seq`` on."""
    raw = sqlite3.connect(path)
    _drop_triggers(raw)
    if edit is not None:
        raw.execute(edit)
    rows = raw.execute(
        "SELECT seq, time, actor, action, detail FROM audit WHERE seq >= ? ORDER BY seq",
        (from_seq,),
    ).fetchall()
    before = raw.execute("SELECT hash FROM audit WHERE seq = ?", (from_seq - 1,)).fetchone()
    prev = before[0] if before else "0" * 64
    for seq, time, actor, action, detail in rows:
        digest = rehash(prev, seq, time, actor, action, detail)
        raw.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest
    _recreate_triggers(raw)
    raw.commit()
    raw.close()


def _forge_review_grade(path: Path, review_id: int, grade: int) -> str:
    """Change a review's grade and its entry's digest to match (what an intruder would)."""
    from edge_agent.store.digests import review_row_digest

    raw = sqlite3.connect(path)
    raw.execute("UPDATE reviews SET grade = ? WHERE id = ?", (grade, review_id))
    row = raw.execute(
        "SELECT id, case_id, user, grade, labels, gradable, comment, created FROM reviews "
        "WHERE id = ?",
        (review_id,),
    ).fetchone()
    seq, detail = raw.execute(
        "SELECT seq, detail FROM audit WHERE action = 'review' AND "
        "json_extract(detail, '$.review_id') = ?",
        (review_id,),
    ).fetchone()
    raw.commit()
    raw.close()
    forged = json.loads(detail) | {"grade": grade, "sha256": review_row_digest(row)}
    text = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    return f"UPDATE audit SET detail = '{text}' WHERE seq = {seq}"


def test_the_key_is_private_and_outside_the_database(tmp_path: Path) -> None:
    root = DeviceRoot(tmp_path).ensure()
    with Store(root.state_db) as s:
        s.record_screening(user="tech", model_version=1, request={}, result={})
        assert s.audit_key == root.audit_key
    assert stat.S_IMODE(root.audit_key.stat().st_mode) == 0o600
    key = root.audit_key.read_bytes()
    assert len(key) == 32
    for path in tmp_path.glob("state.db*"):
        assert key not in path.read_bytes() and key.hex().encode() not in path.read_bytes()
    assert not list(root.audit_key.parent.glob(".*.tmp"))
    with Store(root.state_db) as s:  # the same key is used again, not a new one
        assert s.verify_audit().ok
    assert root.audit_key.read_bytes() == key


def test_a_key_readable_by_others_is_refused(db: Path) -> None:
    key = db.parent / "keys" / "audit.key"
    os.chmod(key, 0o644)
    with pytest.raises(StoreError, match="readable by others"):
        Store(db)


@pytest.mark.parametrize(
    "rehash",
    [
        pytest.param(entry_hash, id="unkeyed-sha256"),
        pytest.param(lambda *f: entry_mac(b"\0" * 32, *f), id="fake-key"),
    ],
)
def test_an_edit_with_every_later_hash_recomputed_is_detected(db: Path, rehash: Rehash) -> None:
    forge = _forge_review_grade(db, 2, 4)
    _rewrite(db, 5, rehash, edit=forge)
    problems = _problems(db)
    assert ("altered", "entries 5-10") in problems  # every rewritten entry fails its MAC
    assert ("edited", "review 2") not in problems  # its (forged) entry no longer vouches ...
    assert ("not entered", "review 2") in problems  # ... so the row has no valid entry


def test_a_chain_rewritten_without_its_keyed_opening_is_detected(db: Path) -> None:
    # the whole chain recomputed by the old unkeyed rule, its keyed opening renamed away
    _rewrite(db, 1, entry_hash, edit="UPDATE audit SET action = 'login' WHERE seq = 1")
    problems = _problems(db)
    assert ("rewritten", "the chain") in problems
    assert {("not entered", f"review {i}") for i in range(1, 5)} <= problems


def test_dropped_last_entries_leave_rows_without_entries(db: Path) -> None:
    raw = sqlite3.connect(db)
    _drop_triggers(raw)
    raw.execute("DELETE FROM audit WHERE seq >= 9")  # the last screening and review
    raw.commit()
    raw.close()
    problems = _problems(db)
    assert ("unprotected", "the audit table") in problems
    assert ("not entered", "review 4") in problems
    assert sum(kind == "not entered" for kind, _ in problems) == 2
    raw = sqlite3.connect(db)
    _recreate_triggers(raw)  # with the triggers put back, the rows still give it away
    raw.commit()
    raw.close()
    assert ("unprotected", "the audit table") not in _problems(db)
    assert ("not entered", "review 4") in _problems(db)


def test_truncation_of_entries_and_rows_is_detected_by_the_anchor(db: Path) -> None:
    anchor = _head(db)
    assert anchor.seq == 10 and _problems(db, anchor) == set()
    raw = sqlite3.connect(db)
    _drop_triggers(raw)
    (case,) = raw.execute("SELECT case_id FROM reviews WHERE id = 4").fetchone()
    raw.execute("DELETE FROM audit WHERE seq >= 9")
    raw.execute("DELETE FROM reviews WHERE id = 4")
    raw.execute("DELETE FROM screenings WHERE case_id = ?", (case,))
    _recreate_triggers(raw)
    raw.commit()
    raw.close()
    assert _problems(db) == set()  # consistent on its own: only the anchor can tell
    assert _problems(db, anchor) == {("truncated", "anchor (entry 10)")}
    assert _problems(db, Anchor(10, anchor.hash)) == {("truncated", "anchor (entry 10)")}


def test_a_replaced_key_and_rewritten_chain_is_detected_by_the_anchor(db: Path) -> None:
    anchor = _head(db)
    forge = _forge_review_grade(db, 2, 4)
    fake = b"\1" * 32
    key = db.parent / "keys" / "audit.key"
    key.write_bytes(fake)  # an intruder with full access makes the device key theirs
    _rewrite(db, 1, lambda *f: entry_mac(fake, *f), edit=forge)
    assert _problems(db) == set()  # the chain is consistent with the new key ...
    problems = _problems(db, anchor)  # ... but not with the head kept off the device
    assert problems == {("rewritten", "anchor (entry 10)")}
    with Store(db) as s:
        reasons = [p.detail for p in s.verify_audit(anchor).problems]
    assert any("not signed with this device's audit key" in r for r in reasons)
    assert any("differs from the anchor" in r for r in reasons)


def test_rewriting_below_the_anchor_with_the_real_key_is_detected(db: Path) -> None:
    anchor = _head(db)
    key = (db.parent / "keys" / "audit.key").read_bytes()
    _rewrite(db, 6, lambda *f: entry_mac(key, *f), edit=_forge_review_grade(db, 2, 4))
    assert _problems(db) == set()
    assert _problems(db, Anchor(anchor.seq, anchor.hash)) == {("rewritten", "anchor (entry 10)")}


def test_an_anchor_string_is_parsed_or_refused() -> None:
    assert Anchor.parse(" 12:abc ") == Anchor(12, "abc")
    assert Anchor.parse('{"seq": 3, "hash": "h", "mac": "m", "time": "t"}').mac == "m"
    with pytest.raises(ValueError, match="SEQ:HASH"):
        Anchor.parse("twelve")


def _old_database(path: Path) -> None:
    """A version 2 state database with an unkeyed chain, as the previous agent left it."""
    from edge_agent.store.schema import MIGRATIONS
    from edge_agent.store.sqlite import statements

    raw = sqlite3.connect(path)
    for script in MIGRATIONS:
        for statement in statements(str(script)):
            raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    raw.execute("INSERT INTO screenings VALUES ('c1', 't1', 'tech', 1, '{}', '{\"g\":2}')")
    raw.execute(
        "INSERT INTO reviews (case_id, user, grade, labels, gradable, comment, created) "
        "VALUES ('c1', 'doc', 2, NULL, 1, '', 't2')"
    )
    prev = "0" * 64
    old = [("tech", "screen", '{"case_id":"c1","model_version":1}'),
           ("doc", "review", '{"case_id":"c1","grade":2,"gradable":true}')]  # fmt: skip
    for seq, (actor, action, detail) in enumerate(old, start=1):
        digest = entry_hash(prev, seq, f"t{seq}", actor, action, detail)
        raw.execute(
            "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, f"t{seq}", actor, action, detail, prev, digest),
        )
        prev = digest
    raw.commit()
    raw.close()


def test_an_old_database_migrates_and_its_rows_are_entered(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _old_database(path)
    with Store(path) as s:
        check = s.verify_audit()
        entries = s.audit_entries()
    assert check.ok, check.problems
    assert [(e.seq, e.actor, e.action) for e in entries] == [
        (1, "tech", "screen"),
        (2, "doc", "review"),
        (3, "migration", "audit.keyed"),  # the migration itself, keyed, over the old head
        (4, "migration", "screen"),  # every row that existed, by its content digest
        (5, "migration", "review"),
    ]
    assert entries[2].detail["unkeyed_entries"] == 2
    assert entries[2].detail["unkeyed_head"] == entries[1].hash == entries[2].prev_hash
    assert entries[2].detail["rows"] == {"screenings": 1, "reviews": 1, "case_images": 0}
    assert entries[2].detail["new_key"] is True
    raw = sqlite3.connect(path)
    raw.execute("UPDATE reviews SET grade = 4 WHERE id = 1")  # a pre-migration row edited
    raw.commit()
    raw.close()
    assert _problems(path) == {("edited", "review 1")}


def test_an_old_chain_keyed_again_with_an_existing_key_is_reported(tmp_path: Path) -> None:
    # what setting a keyed database back to schema 2 (history rewritten unkeyed) looks like:
    # the device key exists already when the "old" chain is keyed
    Store(tmp_path / "other.db").close()
    path = tmp_path / "state.db"
    _old_database(path)
    with Store(path) as s:
        assert s.audit_entries()[2].detail["new_key"] is False
    assert _problems(path) == {("rewritten", "entry 3")}


def test_an_old_entry_rewritten_after_the_migration_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _old_database(path)
    Store(path).close()
    raw = sqlite3.connect(path)
    _drop_triggers(raw)
    detail = '{"case_id":"c1","grade":0,"gradable":true}'
    (t, prev) = raw.execute("SELECT time, prev_hash FROM audit WHERE seq = 2").fetchone()
    forged = entry_hash(prev, 2, t, "doc", "review", detail)  # valid by the old rule ...
    raw.execute("UPDATE audit SET detail = ?, hash = ? WHERE seq = 2", (detail, forged))
    _recreate_triggers(raw)
    raw.commit()
    raw.close()
    # ... but the migration entry's MAC covers the old head
    assert _problems(path) == {("unlinked", "entry 3")}


def test_a_head_is_signed_with_the_device_key(db: Path) -> None:
    with Store(db) as s:
        head = s.signed_head()
        entries = s.audit_entries()
    key = (db.parent / "keys" / "audit.key").read_bytes()
    assert (head["seq"], head["hash"]) == (entries[-1].seq, entries[-1].hash)
    payload = json.dumps(["fovea-audit-head", head["seq"], head["hash"], head["time"]])
    assert head["mac"] == hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    assert head["key_id"] != key.hex()[:16]
