"""Run an ONNX model in ONNX Runtime over a labelled set and score it for screening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models import OUTPUT_NAMES, Predictions, PreprocessSpec, screening_metrics
from models.datasets import FundusArrays
from server.export.onnx_export import INPUT_NAME

SCORED = ("accuracy", "referable_sensitivity", "referable_specificity")


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU ONNX Runtime session for ``path`` (``threads`` 0: ORT's default)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_outputs(
    sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Both named outputs for normalised inputs ``x`` (N x 3 x H x W float32)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    for i in range(0, len(x), batch_size):
        outs = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i : i + batch_size]})
        for name, value in zip(OUTPUT_NAMES, outs, strict=True):
            parts[name].append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(v) for name, v in parts.items()}


def predict_onnx(
    sess: ort.InferenceSession,
    arrays: FundusArrays,
    spec: PreprocessSpec,
    referral_threshold: float,
) -> Predictions:
    """The ONNX model's predictions on ``arrays``, with the labels."""
    out = run_outputs(sess, spec.normalise(arrays.images))
    return Predictions(
        grade_logits=out["grade_logits"],
        gradable_logit=out["gradable_logit"],
        grade=arrays.grade,
        gradable=arrays.gradable,
        referral_threshold=referral_threshold,
    )


def score(p: Predictions) -> dict[str, float]:
    """Accuracy (in points, 0-100) and referable sensitivity/specificity at the threshold."""
    m = screening_metrics(p, resamples=0)
    return {k: 100.0 * m[k].value for k in SCORED}
