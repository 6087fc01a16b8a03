"""Reading a real device root (store + deployed checkpoint) and the ClientApp's plain helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.fl.app import apply_fault, declined_content, node_settings
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


def test_node_settings_need_a_root_and_gate_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="root"):
        node_settings({"site": "a"})
    monkeypatch.delenv("FOVEA_FL_ALLOW_FAULTS", raising=False)
    root, site, threads, fault = node_settings({"root": str(tmp_path), "fault": "nan"})
    assert (root, site, threads, fault) == (tmp_path, tmp_path.name, 2, None)
    monkeypatch.setenv("FOVEA_FL_ALLOW_FAULTS", "1")
    assert node_settings({"root": str(tmp_path), "fault": "scale"})[3] == "scale"
    with pytest.raises(ValueError, match="fault"):
        node_settings({"root": str(tmp_path), "fault": "zero"})


def test_faults_poison_the_reply_as_documented() -> None:
    ref: dict[str, np.ndarray] = {"w": np.zeros(3, np.float32), "n": np.array(4, np.int64)}
    new: dict[str, np.ndarray] = {"w": np.full(3, 0.01, np.float32), "n": np.array(5, np.int64)}
    assert apply_fault(new, ref, None) is new
    assert np.isnan(apply_fault(new, ref, "nan")["w"]).all()
    np.testing.assert_allclose(apply_fault(new, ref, "scale")["w"], 1.0, rtol=1e-5)
    assert apply_fault(new, ref, "nan")["n"] == 5


def test_declined_reply_carries_only_metrics_and_the_reason() -> None:
    content = declined_content("3 reviewed cases")
    assert set(content.keys()) == {METRICS, STATUS}
    assert content.metric_records[METRICS][M_DECLINED] == 1
    assert content.config_records[STATUS][S_REASON] == "3 reviewed cases"
