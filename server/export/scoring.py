"""Run an ONNX model in ONNX Runtime over a labelled set and score it for screening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models import (
    DR_GRADING,
    Predictions,
    PreprocessSpec,
    TaskSpec,
    images_per_batch,
    screening_metrics,
)
from models.datasets import FundusArrays
from server.export.onnx_export import INPUT_NAME
from server.training import read_batches, row_batches

SCORED = ("accuracy", "referable_sensitivity", "referable_specificity")
SCORING_PIXELS = 128 * 128 * 128
"""Pixels per ONNX Runtime run when scoring: 128 images at 128 px, 14 at 384 px. ONNX Runtime's
arena keeps the largest run's activations for the session's life (gigabytes for 128 images at
384 px), and the images are normalised to float32 one run at a time for the same reason."""


def scoring_batch(size: int) -> int:
    """Images per run when scoring ``size``-px inputs: at most 128, at least 1."""
    return images_per_batch(size, SCORING_PIXELS, cap=128)


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU ONNX Runtime session for ``path`` (``threads`` 0: ORT's default)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_outputs(
    sess: ort.InferenceSession, x: np.ndarray, batch_size: int | None = None
) -> dict[str, np.ndarray]:
    """Every named output for normalised inputs ``x`` (N x C x H x W float32), in runs of
    ``batch_size`` images (default :func:`scoring_batch` of their size)."""
    batch_size = batch_size or scoring_batch(x.shape[-1])
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i in range(0, len(x), batch_size):
        outs = sess.run(names, {INPUT_NAME: x[i : i + batch_size]})
        for name, value in zip(names, outs, strict=True):
            parts[name].append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(v) for name, v in parts.items()}


def predict_onnx(
    sess: ort.InferenceSession,
    arrays: FundusArrays,
    spec: PreprocessSpec,
    referral_threshold: float,
    task: TaskSpec = DR_GRADING,
) -> Predictions:
    """The ONNX model's predictions on ``arrays``, with the labels, read as ``task``'s; the
    images are read and normalised one run at a time (a held-out site may not fit in memory)."""
    step = scoring_batch(spec.size)
    parts = [
        run_outputs(sess, spec.normalise(images.numpy()), step)
        for _, images in read_batches(arrays.images, row_batches(len(arrays), step))
    ]
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}
    task.check_outputs(out)
    return Predictions(
        grade_logits=out[task.outputs.classes],
        gradable_logit=out[task.outputs.quality] if task.quality_head else None,
        grade=arrays.targets(task),
        gradable=arrays.gradable,
        referral_threshold=referral_threshold,
        task=task,
    )


def score(p: Predictions) -> dict[str, float]:
    """Accuracy (in points, 0-100) and referable sensitivity/specificity at the threshold."""
    m = screening_metrics(p, resamples=0)
    return {k: 100.0 * m[k].value for k in SCORED if k in m}
