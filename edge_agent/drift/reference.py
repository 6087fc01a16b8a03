"""The bundle's reference distribution (``drift_reference.json``): what the model's inputs and
outputs looked like on validation, which a device's screenings are compared against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.drift.features import Observation

REFERENCE_FILE = "drift_reference.json"
NO_REFERENCE = "no reference in this bundle"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Moments(_Strict):
    """A statistic on the reference sample: its mean and standard deviation per image, and how
    many images it was measured on."""

    mean: float
    std: float = Field(ge=0.0)
    n: int = Field(ge=0)


class DriftReference(_Strict):
    """Per-image statistics of the validation sample, as the device computes them."""

    schema_version: Literal[1] = 1
    source: str
    """Where the sample came from (e.g. "validation: 256 images")."""
    images: int = Field(ge=1)
    brightness: Moments
    sharpness: Moments
    retake_rate: float = Field(ge=0.0, le=1.0)
    referral_rate: float | None = Field(None, ge=0.0, le=1.0)
    confidence: Moments | None = None
    grade_distribution: list[float] | None = None
    """Share of graded images per class, in the task's class order."""
    thresholds: dict[str, dict[str, float]] | None = None
    """CUSUM thresholds per statistic and direction, calibrated when the bundle was exported
    (the device then need not simulate); used only under the settings ``calibration`` names."""
    calibration: str | None = None
    """The key of the statistics and monitor settings the thresholds were calibrated for."""

    def statistics_json(self) -> str:
        """The statistics alone (no thresholds), as canonical JSON: what thresholds depend on."""
        return self.model_dump_json(exclude={"thresholds", "calibration"})

    def summary(self) -> dict[str, object]:
        """The reference as ``/v1/status`` shows it."""
        return self.model_dump(mode="json", exclude={"thresholds", "calibration"})


def _moments(values: Sequence[float]) -> Moments:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    return Moments(mean=mean, std=math.sqrt(var), n=n)


def build_reference(
    observations: Sequence[Observation], source: str, num_classes: int = 5
) -> DriftReference:
    """The reference of a sample's observations (ValueError for an empty sample)."""
    if not observations:
        raise ValueError("a drift reference needs at least one image")
    graded = [o for o in observations if not o.retake]
    referrals = [float(o.referable) for o in graded if o.referable is not None]
    confidences = [o.confidence for o in graded if o.confidence is not None]
    grades = [o.grade for o in graded if o.grade is not None]
    distribution = None
    if grades:
        distribution = [sum(g == c for g in grades) / len(grades) for c in range(num_classes)]
    return DriftReference(
        source=source,
        images=len(observations),
        brightness=_moments([o.brightness for o in observations]),
        sharpness=_moments([o.sharpness for o in observations]),
        retake_rate=sum(o.retake for o in observations) / len(observations),
        referral_rate=sum(referrals) / len(referrals) if referrals else None,
        confidence=_moments(confidences) if len(confidences) > 1 else None,
        grade_distribution=distribution,
    )


def read_reference(slot_dir: Path | None) -> tuple[DriftReference | None, str]:
    """The reference in an installed slot, and a note: where it came from, or why there is none
    (older bundles carry no reference; an unreadable one is named, never raised)."""
    if slot_dir is None:
        return None, "no bundle installed"
    path = Path(slot_dir) / REFERENCE_FILE
    if not path.is_file():
        return None, NO_REFERENCE
    try:
        return DriftReference.model_validate_json(path.read_bytes()), f"{path}"
    except (OSError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        return None, f"{path} is unreadable ({first}); drift is not monitored"
