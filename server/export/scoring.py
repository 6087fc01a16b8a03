"""Run an ONNX model in ONNX Runtime over a labelled set and score it for screening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models import DR_GRADING, Predictions, PreprocessSpec, TaskSpec, screening_metrics
from models.datasets import FundusArrays
from server.export.onnx_export import INPUT_NAME
from server.training import eval_batch_size, read_batches, row_batches

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
    """Every named output for normalised inputs ``x`` (N x C x H x W float32)."""
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
    images are normalised a batch at a time (a held-out site may not fit in memory)."""
    batches = row_batches(len(arrays), eval_batch_size(spec.size, cap=128))
    parts = [
        run_outputs(sess, spec.normalise(images.numpy()))
        for _, images in read_batches(arrays.images, batches)
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
