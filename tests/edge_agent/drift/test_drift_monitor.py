"""The drift monitor's bookkeeping: reference files, alerts, reset, persistence, new bundles."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.drift import (
    NO_REFERENCE,
    REFERENCE_FILE,
    DriftMonitor,
    DriftReference,
    DriftSettings,
    Moments,
    Observation,
    build_reference,
    calibrated_reference,
    image_features,
    read_reference,
)

REFERENCE = DriftReference(
    source="test",
    images=500,
    brightness=Moments(mean=0.45, std=0.05, n=500),
    sharpness=Moments(mean=-1.2, std=0.3, n=500),
    retake_rate=0.08,
    referral_rate=0.35,
    confidence=Moments(mean=0.7, std=0.15, n=460),
    grade_distribution=[0.5, 0.14, 0.2, 0.09, 0.07],
)
FAST = DriftSettings(streams=400)


def _normal(rng: np.random.Generator, brightness: float = 0.45) -> Observation:
    retake = bool(rng.random() < 0.08)
    grade = int(rng.choice(5, p=[0.5, 0.14, 0.2, 0.09, 0.07]))
    return Observation(
        brightness=float(rng.normal(brightness, 0.05)),
        sharpness=float(rng.normal(-1.2, 0.3)),
        retake=retake,
        grade=None if retake else grade,
        referable=None if retake else grade >= 2,
        confidence=None if retake else float(np.clip(rng.normal(0.7, 0.15), 0.2, 1.0)),
    )


def test_read_reference_says_why_there_is_none(tmp_path: Path) -> None:
    assert read_reference(None) == (None, "no bundle installed")
    assert read_reference(tmp_path) == (None, NO_REFERENCE)
    (tmp_path / REFERENCE_FILE).write_text('{"schema_version": 1}')
    reference, note = read_reference(tmp_path)
    assert reference is None and REFERENCE_FILE in note and "unreadable" in note
    (tmp_path / REFERENCE_FILE).write_text(REFERENCE.model_dump_json())
    assert read_reference(tmp_path)[0] == REFERENCE


def test_build_reference_counts_only_graded_images_for_outputs() -> None:
    obs = [
        Observation(0.4, -1.0, False, 2, True, 0.9),
        Observation(0.6, -1.4, False, 0, False, 0.7),
        Observation(0.5, -1.2, True),
    ]
    ref = build_reference(obs, "three")
    assert ref.retake_rate == pytest.approx(1 / 3)
    assert ref.referral_rate == 0.5
    assert ref.grade_distribution == [0.5, 0.0, 0.5, 0.0, 0.0]
    assert ref.brightness.mean == pytest.approx(0.5) and ref.confidence is not None
    with pytest.raises(ValueError, match="at least one image"):
        build_reference([], "none")


def test_image_features_see_darker_and_blurred_images() -> None:
    from models.synth.generator import generate
    from models.synth.profiles import get_site

    image = generate(get_site("site-a"), 1, size=64, seed=3).images[0]
    brightness, sharpness = image_features(image)
    darker, _ = image_features((image * 0.8).astype(np.uint8))
    blurred = image.astype(np.float32)
    blurred[1:-1, 1:-1] = (blurred[:-2, 1:-1] + blurred[2:, 1:-1] + blurred[1:-1, 1:-1]) / 3
    assert darker < brightness
    assert image_features(blurred.astype(np.uint8))[1] < sharpness
    # a task whose input is grey (one channel, with or without its axis) is measured too
    grey = (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    assert image_features(grey) == image_features(grey[..., None])
    assert image_features(grey)[0] == pytest.approx(brightness, abs=0.01)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        image_features(np.zeros((8, 8, 2), np.uint8))


def test_a_shift_raises_one_alert_that_persists_until_reset(tmp_path: Path) -> None:
    state = tmp_path / "drift.json"
    monitor = DriftMonitor(REFERENCE, state, "bundle-1", FAST)
    rng = np.random.default_rng(0)
    for _ in range(300):
        monitor.observe(_normal(rng))
    assert monitor.alerts == []
    for _ in range(200):
        monitor.observe(_normal(rng, brightness=0.38))
    names = [a["name"] for a in monitor.alerts]
    assert "brightness_down" in names
    alert = next(a for a in monitor.alerts if a["name"] == "brightness_down")
    assert alert["value"] < alert["reference"] == 0.45 and 300 < alert["images"] <= 500
    assert alert["cusum"] >= alert["threshold"]
    status = monitor.status()
    assert status["images"] == 500 and status["statistics"]["brightness"]["values"] == 500

    # a crash loses at most the images since the last save; alerts are saved when raised
    again = DriftMonitor(REFERENCE, state, "bundle-1", FAST)
    assert 450 < again.images <= 500 and [a["name"] for a in again.alerts] == names
    after = again.reset("admin-1")
    assert after["alerts"] == [] and after["images"] == 0 and after["last_reset"]["by"] == "admin-1"
    assert json.loads(state.read_text())["alerts"] == []


def test_a_new_bundle_starts_afresh(tmp_path: Path) -> None:
    state = tmp_path / "drift.json"
    monitor = DriftMonitor(REFERENCE, state, "bundle-1", FAST)
    rng = np.random.default_rng(1)
    for _ in range(120):
        monitor.observe(_normal(rng))
    monitor.save()
    assert DriftMonitor(REFERENCE, state, "bundle-1", FAST).images == 120
    assert DriftMonitor(REFERENCE, state, "bundle-2", FAST).images == 0
    state.write_text("{not json")
    assert DriftMonitor(REFERENCE, state, "bundle-1", FAST).images == 0


def test_state_is_written_every_so_many_images(tmp_path: Path) -> None:
    state = tmp_path / "drift.json"
    settings = DriftSettings(streams=400, save_every_images=50, save_every_s=3600)
    monitor = DriftMonitor(REFERENCE, state, "b", settings)
    rng = np.random.default_rng(2)
    for _ in range(49):
        monitor.observe(_normal(rng))
    assert not state.exists()
    monitor.observe(_normal(rng))
    assert json.loads(state.read_text())["images"] == 50
    assert not list(tmp_path.glob(".*tmp"))


def test_thresholds_are_calibrated_once_per_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "drift.json"
    first = DriftMonitor(REFERENCE, state, "b", FAST)
    first.save()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibrated again")

    monkeypatch.setattr("edge_agent.drift.monitor.calibrate", refuse)
    assert DriftMonitor(REFERENCE, state, "b", FAST).thresholds == first.thresholds
    with pytest.raises(AssertionError, match="calibrated again"):
        DriftMonitor(REFERENCE, state, "b", DriftSettings(streams=300))  # other settings


def test_a_bundle_may_carry_its_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = calibrated_reference(REFERENCE, FAST)
    assert shipped.thresholds is not None and shipped.calibration is not None
    assert DriftReference.model_validate_json(shipped.model_dump_json()) == shipped
    assert "thresholds" not in shipped.summary()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibrated on the device")

    monkeypatch.setattr("edge_agent.drift.monitor.calibrate", refuse)
    assert DriftMonitor(shipped, None, "b", FAST).thresholds == shipped.thresholds
    with pytest.raises(AssertionError, match="on the device"):  # other settings: not theirs
        DriftMonitor(shipped, None, "b", DriftSettings(streams=300))


def _referral_delay(seed: int) -> tuple[int | None, list[dict[str, object]]]:
    """Images after the population turns sicker until the first alert, and the alert."""
    monitor = DriftMonitor(REFERENCE, None, "b", FAST)
    rng = np.random.default_rng(seed)
    for _ in range(400):
        assert monitor.observe(_normal(rng)) == []
    sicker = [0.2, 0.1, 0.4, 0.15, 0.15]  # referable share 0.70 instead of 0.36
    for n in range(1, 301):
        obs = _normal(rng)
        grade = int(rng.choice(5, p=sicker)) if obs.grade is not None else None
        refer = None if grade is None else grade >= 2
        raised = monitor.observe(dataclasses.replace(obs, grade=grade, referable=refer))
        if raised:
            return n, raised
    return None, []


def test_a_doubled_referral_rate_is_caught_within_300_images() -> None:
    delay, raised = _referral_delay(3)
    assert delay is not None and delay <= 300
    assert raised[0]["statistic"] in {"referral_rate", "grade_distribution"}
