"""Per-eye results and the worse-eye rule for the patient."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.screening import Recommendation, eye_result, patient_recommendation
from models.task import REFERABLE_MIN_GRADE, referable_probability


def _logits(grade: int, margin: float = 6.0) -> np.ndarray:
    logits = np.zeros(5)
    logits[grade] = margin
    return logits


def test_referable_eye_is_referred_at_the_bundle_threshold() -> None:
    logits = _logits(REFERABLE_MIN_GRADE, margin=1.0)
    p_ref = float(referable_probability(logits[None])[0])
    just_above = eye_result(logits, 4.0, [], referral_threshold=p_ref - 1e-6, eye="right")
    just_below = eye_result(logits, 4.0, [], referral_threshold=p_ref + 1e-6, eye="right")
    assert just_above.referable and just_above.recommendation is Recommendation.REFER
    assert just_below.referable is False
    assert just_below.recommendation is Recommendation.RESCREEN
    assert just_above.grade == 2 and just_above.grade_name == "moderate NPDR"
    assert abs(sum(just_above.probabilities) - 1) < 1e-9


def test_ungradable_eye_is_retaken_without_a_grade() -> None:
    by_model = eye_result(_logits(4), -3.0, [], referral_threshold=0.5)
    by_checks = eye_result(_logits(0), 5.0, ["out of focus"], referral_threshold=0.5)
    for eye in (by_model, by_checks):
        assert eye.recommendation is Recommendation.RETAKE
        assert eye.grade is None and eye.referable is None and not eye.quality.gradable
    d = by_checks.to_dict()
    assert d["recommendation"] == "retake_image" and d["quality"]["reasons"] == ["out of focus"]


def test_bad_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="grade_logits"):
        eye_result(np.zeros(4), 0.0, [], referral_threshold=0.5)
    with pytest.raises(ValueError, match="grade_logits"):
        eye_result(np.full(5, np.nan), 0.0, [], referral_threshold=0.5)
    with pytest.raises(ValueError, match="referral_threshold"):
        eye_result(np.zeros(5), 0.0, [], referral_threshold=1.5)


@pytest.mark.parametrize(
    ("left", "right", "expected", "decided_by"),
    [
        ("rescreen", "rescreen", Recommendation.RESCREEN, ("left", "right")),
        ("rescreen", "refer", Recommendation.REFER, ("right",)),
        ("retake", "rescreen", Recommendation.RETAKE, ("left",)),
        ("retake", "refer", Recommendation.REFER, ("right",)),
    ],
)
def test_the_worse_eye_decides(
    left: str, right: str, expected: Recommendation, decided_by: tuple[str, ...]
) -> None:
    make = {
        "rescreen": lambda eye: eye_result(_logits(0), 5.0, [], referral_threshold=0.5, eye=eye),
        "refer": lambda eye: eye_result(_logits(3), 5.0, [], referral_threshold=0.5, eye=eye),
        "retake": lambda eye: eye_result(_logits(0), -5.0, [], referral_threshold=0.5, eye=eye),
    }
    patient = patient_recommendation([make[left]("left"), make[right]("right")])
    assert patient.recommendation is expected and patient.decided_by == decided_by
    assert patient.to_dict()["recommendation_text"] == expected.text


def test_patient_needs_an_eye() -> None:
    with pytest.raises(ValueError, match="at least one"):
        patient_recommendation([])


def test_a_multilabel_task_without_quality_head_names_the_labels_present() -> None:
    from models import parse_task

    task = parse_task(
        {
            "name": "findings",
            "kind": "multilabel",
            "classes": ["referable DR", "glaucoma suspect", "AMD", "drusen only"],
            "referral": {"labels": ["referable DR", "glaucoma suspect", "AMD"]},
            "quality_head": False,
        }
    )
    logits = np.array([-6.0, 5.0, -6.0, 5.0])
    eye = eye_result(logits, None, [], referral_threshold=0.5, task=task, eye="left")
    d = eye.to_dict()
    assert d["labels"] == ["glaucoma suspect", "drusen only"] and "grade" not in d
    assert d["referable"] is True and eye.recommendation is Recommendation.REFER
    assert d["quality"]["assessed"] is False and d["quality"]["score"] is None
    retake = eye_result(logits, None, ["blurred"], referral_threshold=0.5, task=task)
    assert retake.recommendation is Recommendation.RETAKE and retake.to_dict()["labels"] is None
    with pytest.raises(ValueError, match="class_logits must be 4 finite values"):
        eye_result(np.zeros(5), None, [], referral_threshold=0.5, task=task)


def test_each_eye_records_the_threshold_it_was_screened_at() -> None:
    refer = eye_result(_logits(3), 4.0, [], referral_threshold=0.123, eye="left")
    retake = eye_result(_logits(3), -4.0, [], referral_threshold=0.123)
    for eye in (refer, retake):
        d = eye.to_dict()
        assert d["referral_threshold"] == 0.123
        assert "temperature" not in d  # none given: the device applied the raw score only
    calibrated = eye_result(_logits(2, 1.0), 4.0, [], referral_threshold=0.3, temperature=2.0)
    d = calibrated.to_dict()
    p = d["referable_probability"]
    assert d["temperature"] == 2.0
    expected = 1 / (1 + np.exp(-np.log(p / (1 - p)) / 2.0))
    assert d["calibrated_referable_probability"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="temperature"):
        eye_result(_logits(2), 4.0, [], referral_threshold=0.3, temperature=0.0)
