"""Centralised evaluation on the server's held-out set (a site no device has), in the
checkpoint's task: its headline metrics, labels checked against its classes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from models import DR_GRADING, Predictions, TaskSpec
from models.datasets import FundusArrays
from server.federation.weights import Weights

__all__ = [
    "HeldoutSet",
    "check_task",
    "evaluate_weights",
    "load_heldout",
    "predict_weights",
    "score",
    "scored_metrics",
]


def scored_metrics(task: TaskSpec) -> tuple[str, ...]:
    """What the server scores a model by: the referral rule's sensitivity and specificity, and
    accuracy (single-label kinds) or the mean AUC over labels (``multilabel``)."""
    overall = "mean_auc" if task.kind == "multilabel" else "accuracy"
    return (overall, "referable_sensitivity", "referable_specificity")


@dataclasses.dataclass(frozen=True)
class HeldoutSet:
    """The held-out images, where they came from, and the task their labels are for."""

    site: str
    arrays: FundusArrays
    task: TaskSpec = DR_GRADING


def check_task(heldout: HeldoutSet, model_task: TaskSpec, source: str) -> None:
    """Raise ``ValueError`` when the held-out labels are for another task than the model's."""
    if heldout.task != model_task:
        raise ValueError(
            f"{source}: the held-out site {heldout.site} is labelled for task "
            f"{heldout.task.name} ({heldout.task.kind}), the model answers task "
            f"{model_task.name} ({model_task.kind}); point distill-config at data prepared "
            "for the model's task"
        )


def load_heldout(distill_config: Path, limit: int) -> HeldoutSet:
    """The test site of a distillation config (the site no device and no training run saw).

    Relative data directories are taken from the current directory, as ``fovea distill`` does.
    """
    from server.distill import load_config
    from server.training import load_site, read_task

    cfg = load_config(distill_config)
    site = cfg.data.test_site
    if not site:
        raise ValueError(
            f"{distill_config}: data.test_site is not set; the server needs a held-out site "
            "that no device has to compare the candidate with the deployed model"
        )
    arrays = load_site(cfg.data.dir, site)
    if len(arrays) > limit:
        arrays = arrays.subset(slice(0, limit))
    return HeldoutSet(site, arrays, read_task(cfg.data.dir))


def predict_weights(checkpoint_json: Path, weights: Weights, heldout: FundusArrays) -> Predictions:
    """What the checkpoint's architecture, built for its task, with ``weights`` says about
    ``heldout``, at the checkpoint's referral threshold. Labels outside the task's classes raise
    :class:`~models.TaskSpecError` naming them."""
    import torch

    from models.nets import model_with_state, read_meta
    from server.training import predict

    meta = read_meta(checkpoint_json)
    meta.task.check_labels(heldout.targets(meta.task))
    state = {k: torch.from_numpy(np.asarray(v, order="C")) for k, v in weights.items()}
    model = model_with_state(meta, state, str(checkpoint_json))
    threshold = float(meta.metrics.get("referral_threshold", 0.5))
    return dataclasses.replace(
        predict(model, heldout, meta.preprocess), referral_threshold=threshold
    )


def score(preds: Predictions) -> dict[str, float]:
    """The task's :func:`scored_metrics` of ``preds`` in points (0-100), and ``images``."""
    from models import screening_metrics

    m = screening_metrics(preds, resamples=0)
    return {k: 100.0 * float(m[k].value) for k in scored_metrics(preds.task)} | {
        "images": float(len(preds.grade))
    }


def evaluate_weights(
    checkpoint_json: Path, weights: Weights, heldout: FundusArrays
) -> dict[str, float]:
    """The checkpoint's task's :func:`scored_metrics` (points, 0-100) of
    :func:`predict_weights`."""
    return score(predict_weights(checkpoint_json, weights, heldout))
