"""Run a model over a labelled set and score it."""

from __future__ import annotations

import numpy as np
import torch

from models import Estimate, Predictions, PreprocessSpec, screening_metrics
from models.datasets import FundusArrays
from models.nets import FundusNet
from server.training.loader import eval_batch_size, read_batches, row_batches


@torch.no_grad()
def predict(
    model: FundusNet,
    arrays: FundusArrays,
    spec: PreprocessSpec,
    *,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    workers: int | None = None,
) -> Predictions:
    """The model's outputs on every image of ``arrays``, with the labels, in the model's task.

    Batches default to about 4 M pixels (:func:`eval_batch_size`); sharded images are read
    ahead by ``workers`` processes (None: :func:`auto_workers`)."""
    was = model.training
    model.eval()
    names = model.task.outputs
    classes, quality = [], []
    try:
        batches = row_batches(len(arrays), batch_size or eval_batch_size(spec.size))
        for _, images in read_batches(arrays.images, batches, workers):
            x = torch.from_numpy(spec.normalise(images.numpy())).to(device)
            out = model(x)
            classes.append(out[names.classes].float().cpu().numpy())
            if model.task.quality_head:
                quality.append(out[names.quality].float().cpu().numpy())
    finally:
        model.train(was)
    return Predictions(
        grade_logits=np.concatenate(classes),
        gradable_logit=np.concatenate(quality) if quality else None,
        grade=arrays.targets(model.task),
        gradable=arrays.gradable,
        task=model.task,
    )


def point_metrics(p: Predictions) -> dict[str, float]:
    """Every metric's point value (no bootstrap)."""
    return {k: v.value for k, v in screening_metrics(p, resamples=0).items()}


def metrics_json(m: dict[str, Estimate]) -> dict[str, dict[str, float]]:
    """Metrics with intervals as plain JSON."""
    return {k: v.as_dict() for k, v in m.items()}
