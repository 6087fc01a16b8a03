"""Screening logic: decode uploads, the image-quality gate, per-eye and per-patient results."""

from edge_agent.screening.decode import (
    DEFAULT_LIMITS,
    Decoded,
    DecodeLimits,
    ImageError,
    decode_image,
    decode_upload,
    decoded_size,
    sniff_format,
)
from edge_agent.screening.prepare import (
    DECODE_COPIES,
    MemoryReserve,
    PreparedImage,
    decode_side,
    prepare_image,
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
from edge_agent.screening.sitepoint import (
    SITE_THRESHOLDS_FILE,
    SitePoint,
    carried_threshold,
    clopper_pearson,
    propose,
    referable_needed,
)

__all__ = [
    "DECODE_COPIES",
    "DEFAULT_CHECKS",
    "DEFAULT_LIMITS",
    "SITE_THRESHOLDS_FILE",
    "DecodeLimits",
    "Decoded",
    "EyeResult",
    "FundusCheckSettings",
    "ImageError",
    "MemoryReserve",
    "PatientResult",
    "PreparedImage",
    "Quality",
    "Recommendation",
    "SitePoint",
    "assess_quality",
    "carried_threshold",
    "checks_only",
    "clopper_pearson",
    "decode_image",
    "decode_side",
    "decode_upload",
    "decoded_size",
    "eye_result",
    "fundus_checks",
    "patient_recommendation",
    "prepare_image",
    "propose",
    "referable_needed",
    "sniff_format",
]
