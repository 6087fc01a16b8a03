"""Temperature scaling, expected calibration error and the screening operating point."""

from __future__ import annotations

import numpy as np
import pytest

from models import (
    DR_GRADING,
    calibrate,
    choose_operating_point,
    fit_temperature,
    parse_task,
    point_from_metrics,
    point_metrics,
    referral_reliability,
    reliability,
    uncalibrate,
)

BINARY = parse_task(
    {"name": "b", "kind": "binary", "classes": ["neg", "pos"], "referral": {"classes": ["pos"]}}
)


def _overconfident(t_true: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated log-odds z (the labels are drawn from them), reported as z x ``t_true``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return z * t_true, y


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_temperature_scaling_recovers_a_known_temperature_binary(t_true: float) -> None:
    logit, y = _overconfident(t_true)
    assert fit_temperature(BINARY, logit[:, None], y) == pytest.approx(t_true, rel=0.05)


def test_temperature_scaling_recovers_a_known_temperature_on_dr_grades() -> None:
    # grade logits whose referable mass is sigmoid(a): class 0 at 0, class 2 at a, rest -40
    a, y_ref = _overconfident(3.0, seed=1)
    logits = np.full((len(a), 5), -40.0)
    logits[:, 0], logits[:, 2] = 0.0, a
    grade = np.where(y_ref == 1, 2, 0)
    assert fit_temperature(DR_GRADING, logits, grade) == pytest.approx(3.0, rel=0.05)
    # ungraded (-1) and ungradable images are left out of the fit
    grade_u, gradable = grade.copy(), np.ones(len(grade), bool)
    grade_u[:500], gradable[500:1000] = -1, False
    fitted = fit_temperature(DR_GRADING, logits, grade_u, gradable)
    assert fitted == pytest.approx(3.0, rel=0.05)
    # after scaling the referral score's ECE is small; before it is not
    before = referral_reliability(DR_GRADING, logits, grade).ece
    after = referral_reliability(DR_GRADING, logits, grade, temperature=fitted).ece
    assert after < 0.02 < before


def test_ece_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    o = np.array([0, 1, 1, 1, 0])
    r = reliability(p, o, bins=10)
    # bin 1: conf .05, seen .5, weight 2/5; bin 10: .95 vs 1, 2/5; bin 6: .55 vs 0, 1/5
    assert r.ece == pytest.approx(0.4 * 0.45 + 0.4 * 0.05 + 0.2 * 0.55)
    assert r.counts == (2, 0, 0, 0, 0, 1, 0, 0, 0, 2)
    # bins are [a, b): 0.1 opens the second bin; 1.0 closes the last
    assert reliability(np.array([0.1, 1.0]), np.array([0, 1]), bins=10).counts[1::8] == (1, 1)
    assert r.observed[0] == 0.5 and np.isnan(r.observed[1])
    assert reliability(np.array([1.0, 0.0]), np.array([1, 0]), bins=15).ece == 0.0
    d = r.as_dict()
    assert d["confidence"][1] is None and len(d["edges"]) == 11


def test_calibration_is_monotone_and_invertible() -> None:
    s = np.linspace(0.01, 0.99, 50)
    c = calibrate(s, 2.0)
    assert (np.diff(c) > 0).all()
    assert uncalibrate(float(c[10]), 2.0) == pytest.approx(s[10])
    with pytest.raises(ValueError, match="temperature"):
        calibrate(s, 0.0)


def test_operating_point_reaches_the_target_and_warns_below_the_floor() -> None:
    logit, y = _overconfident(1.0)
    point = choose_operating_point(BINARY, logit[:, None], y, temperature=1.0)
    assert point.target_sensitivity == 0.95 and point.specificity_floor == 0.80
    assert point.sensitivity >= 0.95
    # overlapping classes: 95% sensitivity costs specificity below the 0.80 floor
    assert point.specificity < 0.80
    assert point.warning is not None
    assert "target sensitivity 0.95 reached only at specificity" in point.warning
    assert "< floor 0.80" in point.warning
    assert point.as_dict()["warning"] == point.warning
    # well separated classes keep the floor: no warning
    rng = np.random.default_rng(3)
    y2 = rng.integers(0, 2, 2000)
    sep = np.where(y2 == 1, 4.0, -4.0) + rng.normal(size=2000)
    easy = choose_operating_point(BINARY, sep[:, None], y2, temperature=1.5)
    assert easy.specificity >= 0.80 and easy.warning is None
    assert easy.as_dict()["calibrated_threshold"] == pytest.approx(
        float(calibrate(np.array(easy.threshold), 1.5))
    )
    # the same eyes are referred whether read raw or calibrated
    raw = 1 / (1 + np.exp(-sep)) >= easy.threshold
    cal = calibrate(1 / (1 + np.exp(-sep)), 1.5) >= easy.calibrated_threshold
    assert (raw == cal).all()


def test_a_checkpoints_metrics_carry_the_point() -> None:
    logit, y = _overconfident(1.0)
    point = choose_operating_point(BINARY, logit[:, None], y, temperature=1.3)
    metrics = point_metrics(point) | {
        "referable_sensitivity": point.sensitivity,
        "referable_specificity": point.specificity,
    }
    assert point_from_metrics(metrics, BINARY) == point
    old = point_from_metrics({"referral_threshold": 0.3}, DR_GRADING)  # made before calibration
    assert old.temperature == 1.0 and old.target_sensitivity == 0.95 and old.warning is None
