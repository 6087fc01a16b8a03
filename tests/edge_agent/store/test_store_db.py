"""The state database: users and tokens, screenings, reviews, updates, schema, threads, backup."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_agent.store import SCHEMA_VERSION, Store, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as s:
        yield s


def _screen(store: Store, user: str = "tech") -> str:
    return store.record_screening(
        user=user,
        model_version=3,
        request={"eyes": ["left"], "content_type": "image/png"},
        result={"patient": {"recommendation": "refer"}},
    )


def test_wal_mode_and_schema_version(store: Store) -> None:
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this agent"):
        Store(path)


def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as s:
        token = s.add_user("alice", "clinician")
    with Store(path) as s:
        user = s.authenticate(token)
        assert user is not None and user.name == "alice" and user.role == "clinician"


def test_tokens_are_hashed_and_authenticate_only_enabled_users(store: Store) -> None:
    token = store.add_user("tech", "technician")
    other = store.add_user("doc", "clinician")
    assert token != other and len(token) >= 32
    raw = sqlite3.connect(store.path)
    stored = [r[0] for r in raw.execute("SELECT token_sha256 FROM users")]
    raw.close()
    assert token not in stored and other not in stored
    assert store.authenticate(token).name == "tech"  # type: ignore[union-attr]
    assert store.authenticate("not-a-token") is None
    assert store.authenticate("") is None
    store.set_disabled("tech")
    assert store.authenticate(token) is None
    store.set_disabled("tech", False)
    new = store.rotate_token("tech")
    assert store.authenticate(token) is None
    assert store.authenticate(new).name == "tech"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [("bad name", "admin", "invalid user name"), ("bob", "janitor", "invalid role")],
)
def test_bad_users_are_refused(store: Store, name: str, role: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        store.add_user(name, role)


def test_duplicate_user_is_refused(store: Store) -> None:
    store.add_user("bob", "admin")
    with pytest.raises(StoreError, match="already exists"):
        store.add_user("bob", "clinician")
    assert [u.role for u in store.users()] == ["admin"]


def test_screening_round_trip_and_reviews_latest_wins(store: Store) -> None:
    case_id = _screen(store)
    case = store.get_case(case_id)
    assert case is not None
    assert case.model_version == 3 and case.user == "tech"
    assert case.result == {"patient": {"recommendation": "refer"}}
    assert case.latest_review is None
    store.record_review(case_id, user="doc", grade=1, comment="mild")
    store.record_review(case_id, user="doc2", grade=3)
    case = store.get_case(case_id)
    assert case is not None and [r.grade for r in case.reviews] == [1, 3]
    assert case.latest_review is not None and case.latest_review.user == "doc2"
    store.record_review(case_id, user="doc", grade=None, gradable=False)
    assert store.get_case(case_id).latest_review.gradable is False  # type: ignore[union-attr]
    assert store.get_case("no-such-case") is None
    assert [c.case_id for c in store.recent_cases()] == [case_id]


@pytest.mark.parametrize(
    ("grade", "gradable", "message"),
    [(5, True, "grade must be 0-4"), (None, True, "grade must be 0-4"), (2, False, "no grade")],
)
def test_bad_reviews_are_refused(
    store: Store, grade: int | None, gradable: bool, message: str
) -> None:
    case_id = _screen(store)
    with pytest.raises(StoreError, match=message):
        store.record_review(case_id, user="doc", grade=grade, gradable=gradable)
    with pytest.raises(StoreError, match="no case"):
        store.record_review("missing", user="doc", grade=1)
    assert store.get_case(case_id).reviews == ()  # type: ignore[union-attr]


def test_screening_rejects_non_json_and_duplicate_ids(store: Store) -> None:
    with pytest.raises(StoreError, match="JSON"):
        store.record_screening(user="t", model_version=1, request={"x": float("nan")}, result={})
    case_id = _screen(store)
    with pytest.raises(StoreError, match="already exists"):
        store.record_screening(user="t", model_version=1, request={}, result={}, case_id=case_id)
    assert store.counts()["screenings"] == 1


def test_update_history(store: Store) -> None:
    store.record_update(from_version=None, to_version=1, slot="a", status="installed")
    store.record_update(
        from_version=1, to_version=2, slot="b", status="failed", detail={"error": "golden"}
    )
    history = store.updates()
    assert [(u.to_version, u.slot, u.status) for u in history] == [
        (1, "a", "installed"),
        (2, "b", "failed"),
    ]
    assert history[1].detail == {"error": "golden"}
    assert [e.action for e in store.audit_entries()] == ["audit.keyed", "update", "update"]


def test_concurrent_writers_from_many_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(20):
                _screen(store, user=f"t{i}")
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.counts()["screenings"] == 160
    check = store.verify_audit()
    assert check.ok and check.entries == 1 + 160, check.reason  # the keyed chain's opening


def test_backup_is_consistent_while_another_thread_writes(store: Store, tmp_path: Path) -> None:
    for _ in range(50):
        _screen(store)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        while not stop.is_set():
            _screen(store)
            written.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 5:
            threading.Event().wait(0.01)
        copies = [store.backup(tmp_path / f"backup{i}.db") for i in range(3)]
    finally:
        stop.set()
        thread.join()
    assert len(written) >= 5
    for copy in copies:
        with Store(copy) as restored:
            check = restored.verify_audit()
            counts = restored.counts()
        assert check.ok, check.reason
        # every screening in the copy has its audit entry: the copy is one snapshot (+ the
        # chain's opening audit.keyed entry, this copy's own backup entry and earlier copies')
        assert counts["audit"] == 1 + counts["screenings"] + 1 + copies.index(copy)
        assert counts["screenings"] >= 50
    assert not list(tmp_path.glob(".*.tmp"))


def test_backup_refuses_missing_directory_and_itself(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        store.backup(tmp_path / "nope" / "b.db")
    with pytest.raises(StoreError, match="live database"):
        store.backup(store.path)


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.users()


def test_a_version_1_database_keeps_its_reviews_and_takes_labels(tmp_path: Path) -> None:
    import sqlite3

    from edge_agent.store.schema import MIGRATIONS
    from edge_agent.store.sqlite import statements

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    for statement in statements(str(MIGRATIONS[0])):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO screenings VALUES ('c1', 't', 'u', 1, '{}', '{}')")
    conn.execute("INSERT INTO reviews (case_id, user, grade, gradable, comment, created) "
                 "VALUES ('c1', 'doc', 3, 1, 'old', 't')")  # fmt: skip
    conn.commit()
    conn.close()
    with Store(path) as store:
        old = store.get_case("c1").latest_review
        assert (old.grade, old.comment, old.labels) == (3, "old", None)
        store.record_review("c1", user="doc", grade=None, labels=("AMD", "drusen only"))
        assert store.get_case("c1").latest_review.labels == ("AMD", "drusen only")
        store.record_review("c1", user="doc", grade=9, labels=("x",), num_classes=12)
        assert store.get_case("c1").latest_review.grade == 9


def test_a_screened_case_keeps_the_threshold_it_was_screened_at(tmp_path: Path) -> None:
    from edge_agent.screening import eye_result

    logits = np.array([0.0, 0.0, 3.0, 0.0, 0.0])
    entry = eye_result(logits, 4.0, [], referral_threshold=0.2, eye="left").to_dict()
    with Store(tmp_path / "state.db") as s:
        case_id = s.record_screening(user="tech", model_version=3, request={}, result=entry)
        old = s.record_screening(user="tech", model_version=2, request={}, result={})
        case = s.get_case(case_id)
        assert case is not None and case.referral_threshold == 0.2
        assert case.result["referable"] is True
        before = s.get_case(old)
        assert before is not None and before.referral_threshold is None  # recorded before
        assert s.verify_audit().ok  # the threshold is part of the hashed result
    raw = sqlite3.connect(tmp_path / "state.db")
    with raw:
        raw.execute(
            "UPDATE screenings SET result = replace(result, '0.2', '0.9') WHERE case_id = ?",
            (case_id,),
        )
    raw.close()
    with Store(tmp_path / "state.db") as s:
        assert not s.verify_audit().ok  # an edited threshold is caught
