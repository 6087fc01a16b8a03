"""The demo's measure of adaptation at the clinic whose camera changed: the run's deployed and
global weights on fresh images of that camera, paired, in the summary and the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.demo.adaptation import describe_adaptation, measure_adaptation, write_adaptation
from server.demo.agent import SHIFTED_CAMERA, camera_of
from server.federation import DEPLOYED_FILE, GLOBAL_FILE, load_weights, save_weights
from server.report.operations import _adaptation


def test_the_change_is_paired_and_reported(tiny_teacher: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    deployed = load_weights(tiny_teacher)
    save_weights(deployed, run_dir / DEPLOYED_FILE)
    save_weights(deployed, run_dir / GLOBAL_FILE)  # the same weights: no change at all
    same = measure_adaptation(run_dir, tiny_teacher, "clinic-3", SHIFTED_CAMERA, images=200)
    for m in same["metrics"].values():
        assert m["difference"] == 0.0 and m["interval"] == [0.0, 0.0]
    rng = np.random.default_rng(0)
    moved = {
        k: (v + 0.05 * rng.normal(size=v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v
        for k, v in deployed.items()
    }
    save_weights(moved, run_dir / GLOBAL_FILE)
    result = measure_adaptation(run_dir, tiny_teacher, "clinic-3", SHIFTED_CAMERA, images=200)
    assert result["images"] == 200 and result["camera"] == "site-d-new-camera"
    accuracy = result["metrics"]["accuracy"]
    assert accuracy["difference"] == pytest.approx(accuracy["candidate"] - accuracy["deployed"])
    lo, hi = accuracy["interval"]
    assert lo <= accuracy["difference"] <= hi and hi - lo > 0
    (line, *_) = describe_adaptation(result)
    assert line.startswith("accuracy ") and "95% CI" in line
    path = write_adaptation(tmp_path, result)
    paragraph, table = _adaptation(path)
    assert "clinic-3" in paragraph and "95% interval" in table and "accuracy" in table
    assert _adaptation(tmp_path / "none.json") == []


def test_only_the_shifted_clinic_has_the_new_camera() -> None:
    assert camera_of("clinic-3") is SHIFTED_CAMERA
    assert camera_of("clinic-1").name == "site-a" and camera_of("clinic-2").name == "site-b"
