"""Reading a real device root (store + deployed checkpoint) and the ClientApp's plain helpers."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.fl.app import MODS_ENV, declined_content, extra_mods, node_settings
from edge_agent.fl.device import deployed_checkpoint, load_deployed, load_reviewed
from edge_agent.fl.local import Declined, LocalCases
from edge_agent.fl.protocol import M_DECLINED, METRICS, S_REASON, STATUS
from edge_agent.store import Store
from models.nets import FundusNet, save_checkpoint


def _device(root: Path, student: FundusNet, cases: LocalCases) -> None:
    slot = root / "slots" / "a"
    save_checkpoint(student, slot / "checkpoint" / "model", name="s", preprocess=cases.preprocess)
    (root / "current").symlink_to(slot)
    with Store(root / "state.db") as store:
        for image, grade in zip(cases.images, cases.grades, strict=True):
            case = store.record_screening(user="tech", model_version=1, request={}, result={})
            store.save_case_image(case, image)
            store.record_review(case, user="doc", grade=int(grade))
        ungraded = store.record_screening(user="tech", model_version=1, request={}, result={})
        store.save_case_image(ungraded, cases.images[0])
        store.record_review(ungraded, user="doc", grade=None, gradable=False)


def test_device_root_gives_the_deployed_model_and_reviewed_cases(
    tmp_path: Path, student: FundusNet, case_factory: Callable[..., LocalCases]
) -> None:
    cases = case_factory(12)
    _device(tmp_path, student, cases)
    model, meta = load_deployed(tmp_path)
    assert deployed_checkpoint(tmp_path).is_file()
    assert meta.preprocess == cases.preprocess
    for name, value in student.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), value.numpy())
    reviewed = load_reviewed(tmp_path, meta)
    assert len(reviewed) == 12  # the ungradable review is not a training case
    np.testing.assert_array_equal(reviewed.grades, cases.grades)


def test_a_forged_review_is_not_trained_on(
    tmp_path: Path,
    student: FundusNet,
    case_factory: Callable[..., LocalCases],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cases = case_factory(6)
    _device(tmp_path, student, cases)
    _, meta = load_deployed(tmp_path)
    raw = sqlite3.connect(tmp_path / "state.db")
    forged = (int(cases.grades[2]) + 1) % 5
    raw.execute("UPDATE reviews SET grade = ? WHERE id = 3", (forged,))  # the third case
    raw.commit()
    raw.close()
    with caplog.at_level(logging.WARNING, logger="edge_agent.fl.device"):
        reviewed = load_reviewed(tmp_path, meta)
    assert len(reviewed) == 5
    np.testing.assert_array_equal(reviewed.grades, np.delete(cases.grades, 2))
    assert "1 reviewed case(s)" in caplog.text and "review 3 does not match" in caplog.text


def test_a_device_without_bundle_or_store_declines(
    tmp_path: Path, student: FundusNet, case_factory: Callable[..., LocalCases]
) -> None:
    with pytest.raises(Declined, match="no deployed checkpoint"):
        load_deployed(tmp_path)
    cases = case_factory(4)
    slot = tmp_path / "slots" / "a"
    save_checkpoint(student, slot / "checkpoint" / "model", name="s", preprocess=cases.preprocess)
    (tmp_path / "current").symlink_to(slot)
    _, meta = load_deployed(tmp_path)
    with pytest.raises(Declined, match="no agent store"):
        load_reviewed(tmp_path, meta)


def test_node_settings_need_a_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root"):
        node_settings({"site": "a"})
    assert node_settings({"root": str(tmp_path)}) == (tmp_path, tmp_path.name, 2)
    assert node_settings({"root": str(tmp_path), "site": "x", "threads": 1})[1:] == ("x", 1)


def test_extra_mods_are_loaded_by_name_and_bad_names_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MODS_ENV, raising=False)
    assert extra_mods() == []
    assert extra_mods("edge_agent.fl.app:declined_content") == [declined_content]
    with pytest.raises(ValueError, match="module:function"):
        extra_mods("no-colon")
    with pytest.raises(ValueError, match="cannot load"):
        extra_mods("edge_agent.fl.app:no_such_mod")


def test_declined_reply_carries_only_metrics_and_the_reason() -> None:
    content = declined_content("3 reviewed cases")
    assert set(content.keys()) == {METRICS, STATUS}
    assert content.metric_records[METRICS][M_DECLINED] == 1
    assert content.config_records[STATUS][S_REASON] == "3 reviewed cases"


def test_a_device_lacking_the_models_packages_declines_naming_them(
    tmp_path: Path, student: FundusNet, case_factory: Callable[..., LocalCases]
) -> None:
    import json

    from models import required_packages

    assert required_packages("hf", {}) == ("transformers",)
    assert required_packages("module", {"factory": "hospital_nets.cnn:make"}) == ("hospital_nets",)
    assert required_packages("resnet", {}) == ()
    _device(tmp_path, student, case_factory(4))
    path = deployed_checkpoint(tmp_path)
    meta = json.loads(path.read_text())
    # as if the student came from the hospital's own package, which this device does not have
    path.write_text(json.dumps({**meta, "family": "module",
                                "config": {"factory": "fovea_absent_pkg.nets:make"}}))  # fmt: skip
    with pytest.raises(Declined, match="needs fovea_absent_pkg to train"):
        load_deployed(tmp_path)
