"""Per-eye results and the patient's recommendation: refer, rescreen in 12 months or retake."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from edge_agent.screening.quality import Quality, assess_quality
from models import GRADE_NAMES, NUM_GRADES, gradable_probability, referable_probability, softmax


class Recommendation(StrEnum):
    """What to do next; members are ordered from least to most urgent."""

    RESCREEN = "rescreen_12_months"
    RETAKE = "retake_image"
    REFER = "refer"

    @property
    def text(self) -> str:
        """The recommendation in words, for people."""
        return _TEXT[self]

    @property
    def urgency(self) -> int:
        """Rank used by the worse-eye rule: refer > retake image > rescreen."""
        return list(Recommendation).index(self)


_TEXT = {
    Recommendation.RESCREEN: "rescreen in 12 months",
    Recommendation.RETAKE: "retake image",
    Recommendation.REFER: "refer to an ophthalmologist",
}


@dataclass(frozen=True)
class EyeResult:
    """The screening result for one image of one eye."""

    eye: str
    quality: Quality
    probabilities: tuple[float, ...]
    referable_probability: float
    grade: int | None
    """Most probable ICDR grade; None when the image is not gradable."""
    referable: bool | None
    """Referable DR at the bundle's operating point; None when the image is not gradable."""
    recommendation: Recommendation

    @property
    def grade_name(self) -> str | None:
        """The ICDR name of ``grade``."""
        return None if self.grade is None else GRADE_NAMES[self.grade]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "eye": self.eye,
            "grade": self.grade,
            "grade_name": self.grade_name,
            "probabilities": dict(zip(GRADE_NAMES, self.probabilities, strict=True)),
            "referable_probability": self.referable_probability,
            "referable": self.referable,
            "quality": self.quality.to_dict(),
            "recommendation": self.recommendation.value,
            "recommendation_text": self.recommendation.text,
        }


@dataclass(frozen=True)
class PatientResult:
    """The patient's recommendation and the eye(s) that decided it."""

    recommendation: Recommendation
    decided_by: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "recommendation": self.recommendation.value,
            "recommendation_text": self.recommendation.text,
            "decided_by": list(self.decided_by),
        }


def eye_result(
    grade_logits: np.ndarray,
    gradable_logit: float | np.ndarray,
    checks: list[str],
    *,
    referral_threshold: float,
    gradable_threshold: float = 0.5,
    eye: str = "unknown",
) -> EyeResult:
    """One eye's result from the model's outputs for its image and the image's fundus checks.

    Referable when P(grade >= 2) reaches ``referral_threshold`` (the bundle's operating point);
    an image the quality gate rejects gets "retake image" and no grade.
    """
    logits = np.asarray(grade_logits, dtype=np.float64).reshape(-1)
    if logits.shape != (NUM_GRADES,) or not np.isfinite(logits).all():
        raise ValueError(f"grade_logits must be {NUM_GRADES} finite values, got {logits.tolist()}")
    if not 0.0 < referral_threshold < 1.0:
        raise ValueError(f"referral_threshold must be in (0, 1), got {referral_threshold}")
    p_gradable = float(gradable_probability(np.asarray(gradable_logit))[0])
    quality = assess_quality(checks, p_gradable, gradable_threshold)
    probs = tuple(float(p) for p in softmax(logits))
    p_ref = float(referable_probability(logits[None])[0])
    if not quality.gradable:
        return EyeResult(eye, quality, probs, p_ref, None, None, Recommendation.RETAKE)
    referable = p_ref >= referral_threshold
    grade = int(np.argmax(logits))
    action = Recommendation.REFER if referable else Recommendation.RESCREEN
    return EyeResult(eye, quality, probs, p_ref, grade, referable, action)


def patient_recommendation(eyes: Sequence[EyeResult]) -> PatientResult:
    """The worse eye decides: any referable eye refers the patient; else any image to retake
    means retake; else rescreen in 12 months."""
    if not eyes:
        raise ValueError("a patient recommendation needs at least one eye's result")
    worst = max(eyes, key=lambda e: e.recommendation.urgency).recommendation
    return PatientResult(worst, tuple(e.eye for e in eyes if e.recommendation is worst))
