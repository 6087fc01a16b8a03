"""Drift monitoring on the device: per-image statistics of inputs and outputs compared with the
bundle's reference distribution by sequential (CUSUM) tests that raise alerts."""

from edge_agent.drift.cusum import Family, FamilyState, calibrate
from edge_agent.drift.features import Observation, image_features, observe_eye
from edge_agent.drift.monitor import (
    STATE_FILE,
    DriftMonitor,
    DriftSettings,
    calibrated_reference,
    calibration_key,
    families,
)
from edge_agent.drift.reference import (
    NO_REFERENCE,
    REFERENCE_FILE,
    DriftReference,
    Moments,
    build_reference,
    read_reference,
)

__all__ = [
    "NO_REFERENCE",
    "REFERENCE_FILE",
    "STATE_FILE",
    "DriftMonitor",
    "DriftReference",
    "DriftSettings",
    "Family",
    "FamilyState",
    "Moments",
    "Observation",
    "build_reference",
    "calibrate",
    "calibrated_reference",
    "calibration_key",
    "families",
    "image_features",
    "observe_eye",
    "read_reference",
]
