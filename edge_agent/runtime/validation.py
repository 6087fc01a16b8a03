"""The bundle's labelled validation sample, and a task's accuracy on it in points: what
precision choice compares each candidate by."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models import task_metrics

if TYPE_CHECKING:
    from edge_agent.runtime.precision import BundleInfo

VALIDATION_FILE = "validation.npz"


def validation_sample(slot_dir: Path, info: BundleInfo) -> tuple[np.ndarray, np.ndarray]:
    """The labelled sample, normalised to the task's channels, and its labels (-1: unknown;
    ``multilabel``: N x L of 0/1). Labels are ``labels`` (any task) or ``grade`` (DR)."""
    path, task = slot_dir / VALIDATION_FILE, info.task
    with np.load(path) as v:
        key = "labels" if "labels" in v.files else "grade"
        if key not in v.files or "images" not in v.files:
            raise ValueError(f"{path} needs arrays images and labels (or grade); has {v.files}")
        images, labels = v["images"], v[key]
        gradable = v["gradable"].astype(bool) if "gradable" in v.files else None
    try:
        task.check_labels(labels)
    except ValueError as exc:
        raise ValueError(f"{path}: {key}: {exc}") from None
    keep = np.ones(len(labels), bool) if gradable is None else gradable
    if task.kind == "multilabel":
        labels, images = labels[keep], images[keep]
        keep = np.ones(len(labels), bool)
    else:
        keep &= labels >= 0
        labels = np.where(keep, labels, -1)
    if not keep.any():
        raise ValueError(f"{path} holds no gradable, labelled image to measure accuracy on")
    return info.preprocess.normalise(images), labels


def accuracy_points(info: BundleInfo, class_logits: np.ndarray, labels: np.ndarray) -> float:
    """The task's accuracy in points: class accuracy (single-label kinds); for ``multilabel``
    the mean AUC over labels, or the referral AUC when a label is never (or always) seen."""
    m = task_metrics(info.task, class_logits, labels, info.referral_threshold, resamples=0)
    for key in ("accuracy", "mean_auc", "referral_auc"):
        if key in m and np.isfinite(m[key].value):
            return 100.0 * m[key].value
    raise ValueError(f"validation.npz cannot measure task {info.task.name}: {sorted(m)} are NaN")
