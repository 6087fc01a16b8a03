"""The bundle's drift reference (``drift_reference.json``): the device's own per-image
statistics (brightness, sharpness, the quality gate's retakes; grade, referral, confidence)
measured on a validation sample through the exported fp32 model, for the agent's drift
monitoring to compare its screenings against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.drift import (
    REFERENCE_FILE,
    DriftReference,
    build_reference,
    calibrated_reference,
    observe_eye,
)
from edge_agent.screening import eye_result, fundus_checks
from edge_agent.service import ScreeningSettings
from models import PreprocessSpec, TaskSpec
from server.export.scoring import run_outputs, session

__all__ = ["REFERENCE_FILE", "drift_reference", "write_reference"]


def drift_reference(
    model: Path, images: np.ndarray, settings: ScreeningSettings, source: str
) -> DriftReference:
    """The reference of ``images`` (uint8 N x S x S x C, the model's size) screened by the ONNX
    ``model`` under the bundle's screening ``settings``, as the device would screen them."""
    if len(images) == 0:
        raise ValueError(f"{source}: no images to build a drift reference from")
    task = settings.task
    outputs = run_outputs(session(model), settings.spec.normalise(images))
    quality = outputs[task.outputs.quality] if task.quality_head else None
    observations = []
    for i, image in enumerate(images):
        rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
        result = eye_result(
            outputs[task.outputs.classes][i],
            None if quality is None else quality[i],
            fundus_checks(rgb, settings.checks),
            referral_threshold=settings.referral_threshold,
            gradable_threshold=settings.gradable_threshold,
            task=task,
        )
        observations.append(observe_eye(rgb, result))
    return build_reference(observations, source, task.num_classes)


def write_reference(
    model: Path,
    images: np.ndarray,
    spec: PreprocessSpec,
    task: TaskSpec,
    referral_threshold: float,
    out_dir: Path,
) -> Path:
    """Write ``drift_reference.json`` into the export directory ``out_dir``, its thresholds
    calibrated for the agent's default drift settings; its path."""
    settings = ScreeningSettings(spec=spec, referral_threshold=referral_threshold, task=task)
    measured = drift_reference(model, images, settings, f"validation: {len(images)} images")
    reference = calibrated_reference(measured)
    path = Path(out_dir) / REFERENCE_FILE
    path.write_text(reference.model_dump_json(indent=2))
    return path
