"""Reviewed-case images: kept under the root, retention limits, and (image, grade) pairs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge_agent.store import Retention, Store, StoreError
from models.synth import SITES, generate


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _case(store: Store) -> str:
    return store.record_screening(user="tech", model_version=1, request={}, result={})


def test_images_round_trip_and_reviewed_pairs_use_the_latest_review(tmp_path: Path) -> None:
    images = generate(SITES["site-a"], 4, size=32, seed=1).images
    with Store(tmp_path / "state.db") as store:
        ids = [_case(store) for _ in images]
        for cid, img in zip(ids, images, strict=True):
            path = store.save_case_image(cid, img)
            assert path.parent == tmp_path / "cases" and path.is_file()
        np.testing.assert_array_equal(store.case_image(ids[0]), images[0])
        store.record_review(ids[0], user="doc", grade=1)
        store.record_review(ids[0], user="doc", grade=4)  # corrected: the latest wins
        store.record_review(ids[1], user="doc", grade=None, gradable=False)
        store.record_review(ids[2], user="doc", grade=0)
        pairs = list(store.reviewed_cases())
    assert [g for _, g in pairs] == [4, 0]
    np.testing.assert_array_equal(pairs[0][0], images[0])
    np.testing.assert_array_equal(pairs[1][0], images[2])


def test_retention_by_count_removes_the_oldest(tmp_path: Path) -> None:
    clock = _Clock()
    with Store(tmp_path / "state.db", retention=Retention(max_cases=3), clock=clock) as store:
        ids = []
        for i in range(5):
            clock.now += timedelta(minutes=1)
            ids.append(_case(store))
            store.save_case_image(ids[-1], np.full((8, 8, 3), i, np.uint8))
            store.record_review(ids[-1], user="doc", grade=i % 5)
        assert sorted(p.stem for p in (tmp_path / "cases").glob("*.png")) == sorted(ids[2:])
        assert [int(img[0, 0, 0]) for img, _ in store.reviewed_cases()] == [2, 3, 4]
        assert store.case_image(ids[0]) is None
        assert store.get_case(ids[0]) is not None  # the record stays, only the image goes


def test_retention_by_age(tmp_path: Path) -> None:
    clock = _Clock()
    retention = Retention(max_cases=None, max_age_days=30)
    with Store(tmp_path / "state.db", retention=retention, clock=clock) as store:
        old = _case(store)
        store.save_case_image(old, np.zeros((8, 8, 3), np.uint8))
        clock.now += timedelta(days=29)
        assert store.prune_case_images() == 0
        clock.now += timedelta(days=2)
        new = _case(store)
        store.save_case_image(new, np.ones((8, 8, 3), np.uint8))
        assert store.case_image(old) is None and store.case_image(new) is not None
        assert not (tmp_path / "cases" / f"{old}.png").exists()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 6, 3), np.uint8), "square"),
        (np.zeros((8, 8), np.uint8), "uint8 RGB"),
    ],
)
def test_bad_images_are_refused(tmp_path: Path, image: np.ndarray, message: str) -> None:
    with Store(tmp_path / "state.db") as store:
        cid = _case(store)
        with pytest.raises(ValueError, match=message):
            store.save_case_image(cid, image)
        assert store.counts()["case_images"] == 0


def test_image_for_unknown_case_or_unsafe_id_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        with pytest.raises(StoreError, match="no case"):
            store.save_case_image("missing", np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match="invalid case id"):
            store.record_screening(
                user="t", model_version=1, request={}, result={}, case_id="../../etc"
            )


def test_retention_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_cases"):
        Retention(max_cases=-1)
    with pytest.raises(ValueError, match="max_age_days"):
        Retention(max_age_days=0)
