"""Clinical rows against the audit chain: every screening, review and kept image edited, deleted,
swapped or inserted behind the agent's back (sqlite3 on the file) is named by its id; a case
image removed by retention is not; federated reading skips rows that do not verify."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_agent.store import Retention, Store


@dataclass(frozen=True)
class Device:
    """A state database with three screened cases, four reviews and three kept images."""

    path: Path
    cases: tuple[str, str, str]


@pytest.fixture
def device(tmp_path: Path) -> Device:
    path = tmp_path / "state.db"
    with Store(path) as s:
        cases = tuple(
            s.record_screening(
                user="tech",
                model_version=1,
                request={"eye": "left"},
                result={"grade": i, "recommendation": "refer" if i else "rescreen"},
            )
            for i in range(3)
        )
        for i, case in enumerate(cases):
            s.save_case_image(case, np.full((8, 8, 3), 10 * i, np.uint8))
        s.record_review(cases[0], user="doc", grade=1, comment="mild")  # review 1
        s.record_review(cases[0], user="doc", grade=3, comment="corrected")  # review 2
        s.record_review(cases[1], user="doc", grade=0)  # review 3
        s.record_review(cases[2], user="doc", grade=None, labels=("drusen",))  # review 4
        assert s.verify_audit().ok
    return Device(path, cases)  # type: ignore[arg-type]


def _sql(path: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    """What someone with the file does: plain sqlite3 (foreign keys off, triggers untouched)."""
    raw = sqlite3.connect(path)
    for statement in statements:
        raw.execute(statement, params if "?" in statement else ())
    raw.commit()
    raw.close()


def _problems(path: Path) -> set[tuple[str, str]]:
    with Store(path) as s:
        check = s.verify_audit()
    assert check.ok == (not check.problems)
    return {(p.kind, p.subject) for p in check.problems}


def test_an_untouched_database_verifies(device: Device) -> None:
    assert _problems(device.path) == set()


def test_edited_screening_result_is_named(device: Device) -> None:
    c0 = device.cases[0]
    edit = "UPDATE screenings SET result = '{\"grade\":0}' WHERE case_id = ?"
    _sql(device.path, edit, params=(c0,))
    assert _problems(device.path) == {("edited", f"case {c0}")}


def test_edited_screening_model_version_is_named(device: Device) -> None:
    c1 = device.cases[1]
    _sql(device.path, "UPDATE screenings SET model_version = 7 WHERE case_id = ?", params=(c1,))
    assert _problems(device.path) == {("edited", f"case {c1}")}


def test_deleted_screening_is_named(device: Device) -> None:
    c2 = device.cases[2]
    _sql(device.path, "DELETE FROM screenings WHERE case_id = ?", params=(c2,))
    assert _problems(device.path) == {("deleted", f"case {c2}")}


def test_screening_inserted_outside_the_agent_is_named(device: Device) -> None:
    _sql(device.path, "INSERT INTO screenings VALUES ('forged', 't', 'tech', 1, '{}', '{}')")
    assert _problems(device.path) == {("not entered", "case forged")}


def test_swapped_screenings_are_named_both(device: Device) -> None:
    c0, c1, _ = device.cases
    raw = sqlite3.connect(device.path)
    raw.execute("UPDATE screenings SET case_id = 'tmp' WHERE case_id = ?", (c0,))
    raw.execute("UPDATE screenings SET case_id = ? WHERE case_id = ?", (c0, c1))
    raw.execute("UPDATE screenings SET case_id = ? WHERE case_id = 'tmp'", (c1,))
    raw.commit()
    raw.close()
    assert _problems(device.path) == {("swapped", f"case {c0}"), ("swapped", f"case {c1}")}


def test_edited_review_grade_is_named(device: Device) -> None:
    _sql(device.path, "UPDATE reviews SET grade = 4 WHERE id = 2")
    assert _problems(device.path) == {("edited", "review 2")}


def test_edited_review_labels_and_comment_are_named(device: Device) -> None:
    _sql(device.path, "UPDATE reviews SET labels = '[\"AMD\"]' WHERE id = 4")
    _sql(device.path, "UPDATE reviews SET comment = 'none' WHERE id = 3")
    assert _problems(device.path) == {("edited", "review 4"), ("edited", "review 3")}


def test_deleted_review_is_named(device: Device) -> None:
    # the correction is deleted: the first review would count again
    _sql(device.path, "DELETE FROM reviews WHERE id = 2")
    assert _problems(device.path) == {("deleted", "review 2")}


def test_review_inserted_outside_the_agent_is_named(device: Device) -> None:
    c1 = device.cases[1]
    _sql(
        device.path,
        "INSERT INTO reviews (case_id, user, grade, gradable, comment, created) "
        "VALUES (?, 'doc', 4, 1, '', '2030-01-01')",
        params=(c1,),
    )
    assert _problems(device.path) == {("not entered", "review 5")}


def test_reordered_reviews_are_named(device: Device) -> None:
    # the older review moved after the correction, so it would count as the latest
    _sql(
        device.path,
        "UPDATE reviews SET id = 100 WHERE id = 1",
        "UPDATE reviews SET id = 1 WHERE id = 2",
        "UPDATE reviews SET id = 2 WHERE id = 100",
    )
    assert _problems(device.path) == {("swapped", "review 1"), ("swapped", "review 2")}


def test_renumbered_review_is_named_with_its_origin(device: Device) -> None:
    _sql(device.path, "UPDATE reviews SET id = 9 WHERE id = 3")
    assert _problems(device.path) == {("swapped", "review 9"), ("deleted", "review 3")}


def test_edited_and_deleted_kept_images_are_named(device: Device) -> None:
    c0, c1, c2 = device.cases
    other = (device.path.parent / "cases" / f"{c2}.png").read_bytes()
    (device.path.parent / "cases" / f"{c0}.png").write_bytes(other)
    _sql(device.path, "DELETE FROM case_images WHERE case_id = ?", params=(c1,))
    assert _problems(device.path) == {
        ("edited", f"image of case {c0}"),
        ("deleted", f"image of case {c1}"),
    }


def test_every_problem_is_listed_not_only_the_first(device: Device) -> None:
    c0, c1, _ = device.cases
    _sql(device.path, "UPDATE screenings SET user = 'x' WHERE case_id = ?", params=(c0,))
    _sql(device.path, "DELETE FROM screenings WHERE case_id = ?", params=(c1,))
    _sql(device.path, "UPDATE reviews SET grade = 0 WHERE id = 2")
    _sql(device.path, "DELETE FROM reviews WHERE id = 3")
    assert _problems(device.path) == {
        ("edited", f"case {c0}"),
        ("deleted", f"case {c1}"),
        ("edited", "review 2"),
        ("deleted", "review 3"),
    }


def test_images_removed_by_retention_are_not_reported(device: Device) -> None:
    with Store(device.path, retention=Retention(max_cases=1)) as s:
        assert s.prune_case_images() == 2
        entry = s.audit_entries()[-1]
        assert (entry.actor, entry.action) == ("retention", "retention")
        assert len(entry.detail["images"]) == 2
        check = s.verify_audit()
    assert check.ok, check.problems
    # ... but the image retention kept is still watched
    with sqlite3.connect(device.path) as raw:
        (kept,) = raw.execute("SELECT case_id FROM case_images").fetchone()
    _sql(device.path, "DELETE FROM case_images")
    assert _problems(device.path) == {("deleted", f"image of case {kept}")}


def test_the_store_refuses_to_write_its_own_actions_for_others(device: Device) -> None:
    with Store(device.path) as s, pytest.raises(ValueError, match="store itself"):
        s.audit("mallory", "review", {"review_id": 2, "sha256": "0" * 64})


def test_federated_reading_skips_a_forged_review(device: Device) -> None:
    c1 = device.cases[1]
    with Store(device.path) as s:
        honest = [label for _, label in s.reviewed_cases()]
    assert honest == [3, 0]  # case 0's correction, case 1; case 2 is a multilabel review
    _sql(device.path, "UPDATE reviews SET grade = 4 WHERE id = 3")  # forged grade on case 1
    skipped: list[str] = []
    with Store(device.path) as s:
        pairs = list(s.reviewed_cases(skipped=skipped))
    assert [label for _, label in pairs] == [3]
    assert skipped == [f"case {c1}: review 3 does not match an audit entry"]


def test_federated_reading_skips_unentered_reviews_and_swapped_images(device: Device) -> None:
    c0, c1, c2 = device.cases
    # a review added behind the agent's back would be the latest of case 0
    _sql(
        device.path,
        "INSERT INTO reviews (case_id, user, grade, gradable, comment, created) "
        "VALUES (?, 'doc', 4, 1, '', 'x')",
        params=(c0,),
    )
    cases = device.path.parent / "cases"
    (cases / f"{c1}.png").write_bytes((cases / f"{c2}.png").read_bytes())
    skipped: list[str] = []
    with Store(device.path) as s:
        assert list(s.reviewed_cases(skipped=skipped)) == []
    assert sorted(skipped) == sorted(
        [
            f"case {c0}: review 5 does not match an audit entry",
            f"case {c1}: its image differs from its audit entry (or is unreadable)",
        ]
    )
