import dataclasses

import numpy as np
import pytest

from models.metrics import Predictions, operating_point, paired_difference, screening_metrics


def _brute_auc(score: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return float(wins / (len(pos) * len(neg)))


def _hand_kappa(t: np.ndarray, p: np.ndarray) -> float:
    k = 5
    o = np.zeros((k, k))
    for a, b in zip(t, p, strict=True):
        o[a, b] += 1
    e = np.outer(o.sum(1), o.sum(0)) / o.sum()
    w = np.array([[(i - j) ** 2 / 16 for j in range(k)] for i in range(k)])
    return float(1 - (w * o).sum() / (w * e).sum())


def _preds(n: int = 400, seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    grade = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), grade] += 1.5
    logits = np.round(logits, 1)  # create ties
    gradable = rng.random(n) > 0.1
    grade = np.where(gradable, grade, -1)
    return Predictions(logits, rng.normal(2, 1, (n, 1)), grade, gradable)


def test_auc_and_kappa_match_hand_computation() -> None:
    p = _preds()
    m = screening_metrics(p, resamples=0)
    keep = p.gradable
    e = np.exp(p.grade_logits[keep] - p.grade_logits[keep].max(1, keepdims=True))
    score = (e / e.sum(1, keepdims=True))[:, 2:].sum(1)
    assert m["referable_auc"].value == pytest.approx(_brute_auc(score, p.grade[keep] >= 2))
    pred = p.grade_logits[keep].argmax(1)
    assert m["kappa"].value == pytest.approx(_hand_kappa(p.grade[keep], pred))
    assert m["accuracy"].value == pytest.approx((pred == p.grade[keep]).mean())
    truth = p.grade[keep] >= 2
    assert m["referable_sensitivity"].value == pytest.approx((score[truth] >= 0.5).mean())
    assert m["referable_specificity"].value == pytest.approx((score[~truth] < 0.5).mean())


def test_gradable_metrics() -> None:
    grade = np.array([0, 1, -1, 2])
    gradable = np.array([True, True, False, True])
    gl = np.array([[3.0], [-3.0], [-3.0], [3.0]])  # second gradable image rejected
    p = Predictions(np.eye(5)[[0, 1, 0, 2]] * 5, gl, grade, gradable)
    m = screening_metrics(p, resamples=0)
    assert m["gradable_accuracy"].value == pytest.approx(0.75)
    assert m["false_reject_rate"].value == pytest.approx(1 / 3)


def test_bootstrap_interval_brackets_point_and_narrows_with_n() -> None:
    small = screening_metrics(_preds(200), resamples=300)
    large = screening_metrics(_preds(3000), resamples=300)
    for k in ("accuracy", "kappa", "referable_auc"):
        assert small[k].low <= small[k].value <= small[k].high
        assert (large[k].high - large[k].low) < (small[k].high - small[k].low)


def test_paired_difference_of_identical_models_is_zero() -> None:
    p = _preds()
    d = paired_difference(p, p, resamples=200)
    assert d["accuracy"].value == 0 and d["accuracy"].low == 0 and d["accuracy"].high == 0


def test_paired_difference_refuses_different_labels() -> None:
    with pytest.raises(ValueError, match="same labelled images"):
        paired_difference(_preds(seed=0), _preds(seed=1), resamples=10)


def test_operating_point_reaches_the_target_sensitivity() -> None:
    p = _preds(2000)
    thr = operating_point(p, 0.9)
    m = screening_metrics(dataclasses.replace(p, referral_threshold=thr), resamples=0)
    assert 0.9 <= m["referable_sensitivity"].value < 0.91
    higher = screening_metrics(dataclasses.replace(p, referral_threshold=thr + 1e-3), resamples=0)
    assert higher["referable_sensitivity"].value < 0.9
    with pytest.raises(ValueError, match="target sensitivity"):
        operating_point(p, 1.0)
