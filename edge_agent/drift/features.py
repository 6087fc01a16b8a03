"""What drift monitoring measures of one screened image: inputs (brightness, sharpness, whether
the quality gate asked for a retake) and outputs (grade, referral, confidence)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_agent.screening import EyeResult

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_BORDER = 10 / 255
"""Pixels whose brightest channel is at or below this are border (as the quality gate's)."""


@dataclass(frozen=True)
class Observation:
    """One screened image as drift monitoring sees it; None where the image was not graded."""

    brightness: float
    """Mean brightness (0-1) of the lit field."""
    sharpness: float
    """log of the RMS Laplacian inside the field over its mean brightness (higher: sharper)."""
    retake: bool
    """The quality gate asked for the image to be taken again."""
    grade: int | None = None
    referable: bool | None = None
    confidence: float | None = None
    """The largest class probability."""


def image_features(square: np.ndarray) -> tuple[float, float]:
    """Brightness and log sharpness of a preprocessed uint8 image (its lit field): S x S x 3,
    or one channel (S x S or S x S x 1) for tasks whose input is grey."""
    x = np.asarray(square, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] not in (1, 3):
        raise ValueError(f"expected an S x S image of 1 or 3 channels, got shape {x.shape}")
    lum = x @ _LUMA if x.shape[2] == 3 else x[..., 0]
    field = x.max(axis=2) > _BORDER
    # the field's interior: a pixel whose four neighbours are in the field too
    inner = field[1:-1, 1:-1] & field[:-2, 1:-1] & field[2:, 1:-1]
    inner &= field[1:-1, :-2] & field[1:-1, 2:]
    if inner.sum() < 16:
        return float(lum.mean()), math.log(1e-4)
    brightness = float(lum[1:-1, 1:-1][inner].mean())
    centre = lum[1:-1, 1:-1]
    laplace = 4 * centre - lum[:-2, 1:-1] - lum[2:, 1:-1] - lum[1:-1, :-2] - lum[1:-1, 2:]
    rms = float(np.sqrt(np.mean(laplace[inner] ** 2)))
    return brightness, math.log(max(rms / max(brightness, 1e-3), 1e-4))


def observe_eye(square: np.ndarray, result: EyeResult) -> Observation:
    """The observation of one screened eye: its image's features and the screening's answer."""
    brightness, sharpness = image_features(square)
    graded = result.quality.passed
    return Observation(
        brightness=brightness,
        sharpness=sharpness,
        retake=not graded,
        grade=result.grade if graded else None,
        referable=result.referable if graded else None,
        confidence=max(result.probabilities) if graded and result.probabilities else None,
    )
