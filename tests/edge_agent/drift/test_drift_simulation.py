"""The acceptance numbers by simulation: a camera change is caught within 300 images, and an
unchanged device raises at most 1 false alarm per 20,000 images.

Inputs are measured on synthetic fundus images (``models.synth``) at the model's size through
the device's own feature extraction; the quality gate's retake stands for the synthetic
ungradable flag, and the outputs (grade, referral, confidence) are drawn from the reference's
distribution (no model runs here: only the camera changes).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from edge_agent.drift import (
    DriftMonitor,
    DriftReference,
    DriftSettings,
    Observation,
    build_reference,
    image_features,
)
from models.synth.generator import generate
from models.synth.profiles import get_site

SIZE = 64
"""The student's input size (PreprocessSpec's default)."""
GRADES = (0.5, 0.14, 0.2, 0.09, 0.07)
SEEDS = range(6)


def _observations(images: np.ndarray, gradable: np.ndarray, seed: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for image, ok in zip(images, gradable, strict=True):
        brightness, sharpness = image_features(image)
        grade = int(rng.choice(5, p=GRADES))
        confidence = float(np.clip(rng.normal(0.7, 0.15), 0.2, 1.0))
        retake = not bool(ok)
        out.append(
            Observation(
                brightness,
                sharpness,
                retake,
                None if retake else grade,
                None if retake else grade >= 2,
                None if retake else confidence,
            )
        )
    return out


def _site(name: str, n: int, seed: int, scale: float = 1.0) -> list[Observation]:
    data = generate(get_site(name), n, size=SIZE, seed=seed)
    pixels = data.pixels()
    images = pixels if scale == 1.0 else (pixels * scale).clip(0, 255).astype(np.uint8)
    return _observations(images, data.gradable, seed)


@pytest.fixture(scope="module")
def monitor() -> DriftMonitor:
    """A monitor over site-a's validation-like sample (its thresholds calibrated once)."""
    reference = build_reference(_site("site-a", 600, seed=1), "site-a validation", 5)
    return DriftMonitor(reference, None, "test")


def _fresh(monitor: DriftMonitor) -> DriftMonitor:
    """The same reference and thresholds, nothing counted (no re-calibration)."""
    copy = DriftMonitor.__new__(DriftMonitor)
    copy.__dict__.update(monitor.__dict__)
    copy._fresh()
    return copy


def _delay(monitor: DriftMonitor, seed: int, after: list[Observation]) -> int | None:
    """Images after the change until the first alert (None: none within ``after``); the 400
    images before the change must raise nothing."""
    device = _fresh(monitor)
    for obs in _site("site-a", 400, seed=1000 + seed):
        assert device.observe(obs) == [], "false alarm before the camera changed"
    for i, obs in enumerate(after, start=1):
        if device.observe(obs):
            return i
    return None


CHANGES = {
    "site-e camera": lambda seed: _site("site-e", 300, seed=2000 + seed),
    "site-b camera": lambda seed: _site("site-b", 300, seed=2000 + seed),
    "flash 10% dimmer": lambda seed: _site("site-a", 300, seed=2000 + seed, scale=0.9),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_camera_change_is_caught_within_300_images(monitor: DriftMonitor, change: str) -> None:
    delays = [_delay(monitor, seed, CHANGES[change](seed)) for seed in SEEDS]
    print(f"{change}: detection delays {delays}")  # shown with -s: the numbers in NOTES
    assert all(d is not None and d <= 300 for d in delays), delays


def _in_control(reference: DriftReference, seed: int, n: int) -> Iterator[Observation]:
    """Per-image statistics drawn from the reference's fitted distribution."""
    rng = np.random.default_rng(seed)
    b, s = reference.brightness, reference.sharpness
    conf = reference.confidence
    assert conf is not None and reference.grade_distribution is not None
    bright = rng.normal(b.mean, b.std, n)
    sharp = rng.normal(s.mean, s.std, n)
    retake = rng.random(n) < reference.retake_rate
    grades = rng.choice(5, n, p=np.asarray(reference.grade_distribution))
    refer = rng.random(n) < (reference.referral_rate or 0.0)
    confidence = rng.normal(conf.mean, conf.std, n)
    for i in range(n):
        graded = not retake[i]
        yield Observation(
            float(bright[i]),
            float(sharp[i]),
            bool(retake[i]),
            int(grades[i]) if graded else None,
            bool(refer[i]) if graded else None,
            float(confidence[i]) if graded else None,
        )


def test_false_alarms_on_an_unchanged_device_simulated(monitor: DriftMonitor) -> None:
    devices, images = 30, 20_000
    alarms = []
    for seed in range(devices):
        device = _fresh(monitor)
        alarms.append(
            sum(len(device.observe(o)) for o in _in_control(device.reference, seed, images))
        )
    rate = sum(alarms) / devices
    print(f"false alarms per {images:,} images over {devices} devices: {rate:.2f} ({alarms})")
    assert rate <= 0.5  # the budget is 0.25; the acceptance asks for <= 1
    assert max(alarms) <= 2


def test_false_alarms_on_a_real_image_stream(monitor: DriftMonitor) -> None:
    device = _fresh(monitor)
    raised = [
        a for seed in range(4) for o in _site("site-a", 500, 3000 + seed) for a in device.observe(o)
    ]
    assert raised == [] and device.images == 2000


def test_thresholds_follow_the_budget(monitor: DriftMonitor) -> None:
    loose = DriftMonitor(monitor.reference, None, "x", DriftSettings(false_alarms=0.9, streams=500))
    assert all(
        loose.thresholds[name][side] < monitor.thresholds[name][side]
        for name in monitor.thresholds
        for side in monitor.thresholds[name]
    )
