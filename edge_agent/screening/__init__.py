"""Screening logic: decode uploads, the image-quality gate, per-eye and per-patient results."""

from edge_agent.screening.decode import (
    DEFAULT_LIMITS,
    DecodeLimits,
    ImageError,
    decode_image,
    sniff_format,
)
from edge_agent.screening.quality import (
    DEFAULT_CHECKS,
    FundusCheckSettings,
    Quality,
    assess_quality,
    checks_only,
    fundus_checks,
)
from edge_agent.screening.recommend import (
    EyeResult,
    PatientResult,
    Recommendation,
    eye_result,
    patient_recommendation,
)

__all__ = [
    "DEFAULT_CHECKS",
    "DEFAULT_LIMITS",
    "DecodeLimits",
    "EyeResult",
    "FundusCheckSettings",
    "ImageError",
    "PatientResult",
    "Quality",
    "Recommendation",
    "assess_quality",
    "checks_only",
    "decode_image",
    "eye_result",
    "fundus_checks",
    "patient_recommendation",
    "sniff_format",
]
