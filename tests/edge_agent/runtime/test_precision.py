"""Precision choice on the tiny export: measurements, budget, ranking, fallback, the record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.runtime import (
    NOT_INSTALLED,
    BackendError,
    BundleInfo,
    SelectionSettings,
    batch_sizes,
    choose_precision,
    open_selected,
    serving_batch,
)

FAST = SelectionSettings(batch=4, runs=2, min_seconds=0.0, threads=1)


@pytest.fixture(scope="module")
def selection(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    info = BundleInfo.from_export_dir(tiny_export, digest="ab" * 32)
    record = tmp_path_factory.mktemp("engines") / "selection.json"
    return info, choose_precision(tiny_export, info, FAST, record=record), record


def test_every_precision_is_measured(selection: tuple) -> None:
    _, sel, _ = selection
    ort = {m.precision: m for m in sel.measurements if m.backend == "onnxruntime"}
    assert set(ort) == {"fp32", "fp16", "int8", "int8dyn"}
    for m in ort.values():
        assert m.throughput_img_s and m.throughput_img_s > 0, m
        assert m.golden_max_abs_error is not None
        assert m.accuracy is not None and 0 <= m.accuracy <= 100
    assert ort["fp32"].status == "passed" and ort["fp32"].accuracy_drop == 0
    assert sel.reference_accuracy == ort["fp32"].accuracy


def test_each_candidate_is_timed_at_every_batch_size_and_keeps_its_best(selection: tuple) -> None:
    _, sel, record = selection
    assert batch_sizes(4) == [1, 2, 4] and batch_sizes(12) == [1, 2, 4, 8, 12]
    for m in sel.measurements:
        if m.throughput_img_s is None:
            continue
        assert sorted(m.throughput_by_batch) == [1, 2, 4]
        assert m.best_batch in m.throughput_by_batch
        assert m.throughput_img_s == max(m.throughput_by_batch.values())
        assert m.throughput_img_s == m.throughput_by_batch[m.best_batch]
    chosen = sel.chosen
    recorded = {"serving": {"best_batch": chosen.best_batch}}
    assert serving_batch(recorded, 16) == chosen.best_batch  # batches no larger than the best
    assert serving_batch({"serving": {"best_batch": 32}}, 16) == 16  # nor than configured
    assert serving_batch(json.loads(record.read_text()), 16) == 16  # nothing opened: as set


def test_tensorrt_is_reported_skipped_not_faked(selection: tuple) -> None:
    _, sel, _ = selection
    trt = [m for m in sel.measurements if m.backend == "tensorrt"]
    assert trt, "the recipe lists TensorRT precisions"
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        assert all(m.status == NOT_INSTALLED for m in trt)
        assert all(m.throughput_img_s is None for m in trt)


def test_chosen_is_the_fastest_passing(selection: tuple) -> None:
    _, sel, _ = selection
    ranked = sel.ranked()
    assert ranked and sel.chosen is ranked[0]
    speeds = [m.throughput_img_s for m in ranked]
    assert speeds == sorted(speeds, reverse=True)
    for m in sel.measurements:
        if m.accuracy_drop is not None:
            within = m.accuracy_drop <= (m.budget_points or 0) + 1e-9
            assert m.passed == within, m


def test_measurements_are_recorded_as_json(selection: tuple) -> None:
    _, sel, record = selection
    data = json.loads(record.read_text())
    assert data["schema_version"] == 1
    assert data["chosen"] == {"backend": sel.chosen.backend, "precision": sel.chosen.precision}
    assert len(data["measurements"]) == len(sel.measurements)
    assert data["batch"] == 4


def test_over_budget_precision_is_not_chosen(tiny_export: Path) -> None:
    info = BundleInfo.from_export_dir(tiny_export)
    strict = BundleInfo(info.preprocess, info.files, {"fp16": 0.0, "int8": 0.0})
    sel = choose_precision(tiny_export, strict, FAST)
    for m in sel.measurements:
        if m.accuracy_drop is not None and m.accuracy_drop > 0:
            assert m.status == "over budget"
            assert m not in sel.ranked()


def test_broken_file_is_a_failed_candidate_and_others_still_pass(
    tiny_export: Path, tmp_path: Path
) -> None:
    slot = tmp_path / "slot"
    shutil.copytree(tiny_export, slot)
    (slot / "model.fp16.onnx").write_bytes(b"corrupt")
    info = BundleInfo.from_export_dir(slot)
    sel = choose_precision(slot, info, FAST)
    fp16 = next(m for m in sel.measurements if m.precision == "fp16" and m.backend != "tensorrt")
    assert fp16.status.startswith("failed: ONNX Runtime cannot load")
    assert "fp16" not in [m.precision for m in sel.ranked()]
    assert sel.chosen is not None


def test_open_selected_falls_back_to_next_fastest(tiny_export: Path, tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    shutil.copytree(tiny_export, slot)
    info = BundleInfo.from_export_dir(slot)
    sel = choose_precision(slot, info, FAST)
    ranked = sel.ranked()
    assert len(ranked) >= 2
    (slot / info.files[ranked[0].precision]).write_bytes(b"gone bad after measuring")
    logs: list[str] = []
    backend, m = open_selected(sel, slot, info, FAST, log=logs.append)
    assert m is ranked[1] and backend.precision == ranked[1].precision
    assert "trying the next fastest" in logs[0]
    for r in ranked:
        (slot / info.files[r.precision]).write_bytes(b"x")
    with pytest.raises(BackendError, match="could be loaded"):
        open_selected(sel, slot, info, FAST)


def test_validation_without_gradable_images_is_an_error(tiny_export: Path, tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    shutil.copytree(tiny_export, slot)
    with np.load(slot / "validation.npz") as v:
        arrays = dict(v)
    arrays["gradable"] = np.zeros_like(arrays["gradable"])
    np.savez(slot / "validation.npz", **arrays)
    with pytest.raises(ValueError, match="no gradable"):
        choose_precision(slot, BundleInfo.from_export_dir(slot), FAST)


def test_bundle_info_validates() -> None:
    from models.preprocess import PreprocessSpec

    spec = PreprocessSpec(size=32)
    with pytest.raises(ValueError, match="must carry fp32"):
        BundleInfo(spec, {"fp16": "a.onnx"}, {"fp16": 0.2, "int8": 1})
    with pytest.raises(ValueError, match="unknown precisions"):
        BundleInfo(spec, {"fp32": "a", "int4": "b"}, {"fp16": 0.2, "int8": 1})
    with pytest.raises(ValueError, match="'int8'"):
        BundleInfo(spec, {"fp32": "a"}, {"fp16": 0.2})
    info = BundleInfo(spec, {"fp32": "a"}, {"fp16": 0.2, "int8": 1.5})
    assert info.budget("int8dyn") == 1.5 and info.budget("fp16") == 0.2
