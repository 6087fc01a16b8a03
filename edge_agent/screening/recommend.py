"""Per-eye results and the patient's recommendation: refer, rescreen in 12 months or retake."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from edge_agent.screening.quality import Quality, assess_quality, checks_only
from models import DR_GRADING, TaskSpec, calibrate, gradable_probability


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
    """The screening result for one image of one eye, in the task's classes."""

    eye: str
    quality: Quality
    probabilities: tuple[float, ...]
    """Per class (``multilabel``: per label, each on its own) in the task's class order."""
    referable_probability: float
    """The task's referral score, P(refer)."""
    grade: int | None
    """Most probable class (single-label kinds; for DR the ICDR grade); None when the image
    did not pass the quality gate, and always None for ``multilabel``."""
    referable: bool | None
    """Refer at the bundle's operating point; None when the image did not pass the gate."""
    recommendation: Recommendation
    task: TaskSpec = DR_GRADING
    present: tuple[int, ...] | None = None
    """``multilabel``: the labels present (P >= 0.5); None otherwise or when not classified."""
    referral_threshold: float | None = None
    """The threshold on ``referable_probability`` this eye was screened at (the bundle's
    operating point); recorded with the case."""
    temperature: float | None = None
    """The bundle's calibration temperature when the device was given one: the case then also
    records its calibrated P(refer), ``sigmoid(logit(P(refer)) / temperature)``."""

    @property
    def grade_name(self) -> str | None:
        """The class name of ``grade`` (for DR, the ICDR name)."""
        return None if self.grade is None else self.task.classes[self.grade]

    @property
    def labels(self) -> list[str] | None:
        """``multilabel``: the names of the labels present."""
        return None if self.present is None else [self.task.classes[i] for i in self.present]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form. A ``grading`` task answers in grades (``grade``, ``grade_name``), as
        DR screening always has; other kinds answer ``class`` and ``class_index``, and
        ``multilabel`` the ``labels`` present."""
        if self.task.kind == "grading":
            answer: dict[str, object] = {"grade": self.grade, "grade_name": self.grade_name}
        elif self.task.kind == "multilabel":
            answer = {"labels": self.labels}
        else:
            answer = {"class": self.grade_name, "class_index": self.grade}
        return {
            "eye": self.eye,
            **answer,
            "probabilities": dict(zip(self.task.classes, self.probabilities, strict=True)),
            "referable_probability": self.referable_probability,
            "referable": self.referable,
            "quality": self.quality.to_dict(),
            "recommendation": self.recommendation.value,
            "recommendation_text": self.recommendation.text,
            **self._operating_point(),
        }

    def _operating_point(self) -> dict[str, object]:
        point: dict[str, object] = {}
        if self.referral_threshold is not None:
            point["referral_threshold"] = self.referral_threshold
        if self.temperature is not None:
            point["temperature"] = self.temperature
            point["calibrated_referable_probability"] = float(
                calibrate(np.asarray(self.referable_probability), self.temperature)
            )
        return point


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


@dataclass(frozen=True)
class _ScreenedAt:
    referral_threshold: float
    temperature: float | None

    def result(self, eye: EyeResult) -> EyeResult:
        return dataclasses.replace(
            eye, referral_threshold=self.referral_threshold, temperature=self.temperature
        )


def _class_logits(logits: np.ndarray, task: TaskSpec) -> np.ndarray:
    width = task.output_shapes()[task.outputs.classes][0]
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if z.shape != (width,) or not np.isfinite(z).all():
        raise ValueError(f"{task.outputs.classes} must be {width} finite values, got {z.tolist()}")
    return z


def eye_result(
    grade_logits: np.ndarray,
    gradable_logit: float | np.ndarray | None,
    checks: list[str],
    *,
    referral_threshold: float,
    gradable_threshold: float = 0.5,
    eye: str = "unknown",
    task: TaskSpec = DR_GRADING,
    temperature: float | None = None,
) -> EyeResult:
    """One eye's result from the model's outputs for its image (its class logits, and the
    quality logit when ``task`` has a quality head) and the image's fundus checks.

    Referable when the task's referral score reaches ``referral_threshold`` (the bundle's
    operating point); an image the quality gate rejects gets "retake image" and no class.
    Without a quality head only the image checks gate it, and quality is "not assessed".
    The result records ``referral_threshold`` (and ``temperature``, when given) with the case.
    """
    logits = _class_logits(grade_logits, task)
    if not 0.0 < referral_threshold < 1.0:
        raise ValueError(f"referral_threshold must be in (0, 1), got {referral_threshold}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    point = _ScreenedAt(referral_threshold, temperature)
    if task.quality_head:
        if gradable_logit is None:
            raise ValueError(f"task {task.name} has a quality head: {task.outputs.quality} needed")
        p_gradable = float(gradable_probability(np.asarray(gradable_logit))[0])
        quality = assess_quality(checks, p_gradable, gradable_threshold)
    else:
        quality = checks_only(checks)
    probs = task.probabilities(logits[None])
    p_ref = float(task.referral_from(probs)[0])
    as_tuple = tuple(float(p) for p in probs[0])
    if not quality.passed:
        retake = Recommendation.RETAKE
        return point.result(EyeResult(eye, quality, as_tuple, p_ref, None, None, retake, task))
    referable = p_ref >= referral_threshold
    action = Recommendation.REFER if referable else Recommendation.RESCREEN
    if task.kind == "multilabel":
        present = tuple(int(i) for i in np.flatnonzero(probs[0] >= 0.5))
        return point.result(
            EyeResult(eye, quality, as_tuple, p_ref, None, referable, action, task, present)
        )
    scores = logits if task.kind != "binary" else probs[0]  # logits: ties break as they did
    grade = int(np.argmax(scores))
    return point.result(EyeResult(eye, quality, as_tuple, p_ref, grade, referable, action, task))


def patient_recommendation(eyes: Sequence[EyeResult]) -> PatientResult:
    """The patient rule: any referred eye refers the patient (the task's ``patient_refers``;
    under ``worse_eye`` that eye is the worse one); else any image to retake means retake;
    else rescreen in 12 months."""
    if not eyes:
        raise ValueError("a patient recommendation needs at least one eye's result")
    task = eyes[0].task
    if task.patient_refers([e.recommendation is Recommendation.REFER for e in eyes]):
        worst = Recommendation.REFER
    else:
        worst = max(eyes, key=lambda e: e.recommendation.urgency).recommendation
    return PatientResult(worst, tuple(e.eye for e in eyes if e.recommendation is worst))
