"""The operating point and calibration of a scored run: fitted on validation only, recorded in
the checkpoint and metrics.json, with ECE before/after and per-grade recall per split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import GRADE_NAMES
from models.nets import load_checkpoint
from server.training import DataConfig, ScoreOptions, load_splits, score_model


def test_threshold_and_temperature_come_from_validation_only(
    tiny_teacher: Path, tiny_data: Path
) -> None:
    model, meta = load_checkpoint(tiny_teacher)
    splits = load_splits(DataConfig(dir=tiny_data), 0)
    assert splits.test is not None
    opts = ScoreOptions(resamples=0)
    first = score_model(model, {"val": splits.val, "test": splits.test}, meta.preprocess, opts)
    # another test split (half of it, reversed), and none at all: the point does not move
    half = splits.test.subset(np.arange(len(splits.test) // 2)[::-1])
    other = score_model(model, {"val": splits.val, "test": half}, meta.preprocess, opts)
    alone = score_model(model, {"val": splits.val}, meta.preprocess, opts)
    for scored in (other, alone):
        assert scored.entry["referral_threshold"] == first.entry["referral_threshold"]
        assert scored.entry["temperature"] == first.entry["temperature"]
    # ... while changing validation does move it
    val_half = splits.val.subset(np.arange(0, len(splits.val), 2))
    moved = score_model(model, {"val": val_half}, meta.preprocess, opts)
    assert moved.entry["operating_point"] != first.entry["operating_point"]

    point = first.entry["operating_point"]
    assert point["target_sensitivity"] == 0.95 and point["specificity_floor"] == 0.80
    assert point["validation_sensitivity"] >= 0.95
    assert first.entry["val"]["referable_sensitivity"]["value"] == pytest.approx(
        point["validation_sensitivity"]
    )
    assert (point["warning"] is None) == (point["validation_specificity"] >= 0.80)
    for split in ("val", "test"):
        cal = first.entry["calibration"][split]
        assert set(cal) == {"temperature", "before", "after"}
        assert 0 <= cal["after"]["ece"] <= 1 and len(cal["after"]["counts"]) == 15
        assert {f"recall[{g}]" for g in GRADE_NAMES} <= set(first.entry[split])


def test_a_distilled_checkpoint_and_metrics_json_record_the_point(tiny_teacher: Path) -> None:
    _, meta = load_checkpoint(tiny_teacher)
    for key in ("referral_threshold", "temperature", "target_sensitivity", "specificity_floor"):
        assert key in meta.metrics
    metrics = json.loads((tiny_teacher.parent / "metrics.json").read_text())["teacher"]
    assert metrics["operating_point"]["referral_threshold"] == meta.metrics["referral_threshold"]
    assert metrics["temperature"] == meta.metrics["temperature"] > 0
    assert "before" in metrics["calibration"]["val"]


def test_the_rule_of_the_config_picks_the_point() -> None:
    from models import Predictions
    from server.distill.config import DistillConfig
    from server.training import validation_point

    rng = np.random.default_rng(0)
    grade = rng.integers(0, 5, 600)
    logits = rng.normal(size=(600, 5)) + 1.5 * np.eye(5)[grade]
    val = Predictions(logits, np.full(600, 3.0), grade, np.ones(600, bool))
    task_point = validation_point(val, "task")
    assert task_point.target_sensitivity == 0.95 and task_point.sensitivity >= 0.95
    lower = validation_point(val, 0.9)
    assert lower.target_sensitivity == 0.9 and lower.threshold > task_point.threshold
    fixed = validation_point(val, None)
    assert fixed.threshold == 0.5 and fixed.temperature == task_point.temperature
    assert DistillConfig.model_fields["referral_sensitivity"].default == "task"
