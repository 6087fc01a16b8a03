"""Centralised evaluation on the server's held-out set (a site no device has)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from models.datasets import FundusArrays
from server.federation.weights import Weights

__all__ = ["HeldoutSet", "evaluate_weights", "load_heldout"]

SCORED = ("accuracy", "referable_sensitivity", "referable_specificity")


@dataclasses.dataclass(frozen=True)
class HeldoutSet:
    """The held-out images and where they came from."""

    site: str
    arrays: FundusArrays


def load_heldout(distill_config: Path, limit: int) -> HeldoutSet:
    """The test site of a distillation config (the site no device and no training run saw).

    Relative data directories are taken from the current directory, as ``fovea distill`` does.
    """
    from server.distill import load_config
    from server.training import load_site

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
    return HeldoutSet(site, arrays)


def evaluate_weights(
    checkpoint_json: Path, weights: Weights, heldout: FundusArrays
) -> dict[str, float]:
    """Accuracy and referable sensitivity/specificity (points, 0-100) of the checkpoint's
    architecture with ``weights`` on ``heldout``, at the checkpoint's referral threshold."""
    import torch

    from models import screening_metrics
    from models.nets import build_model, read_meta
    from server.training import predict

    meta = read_meta(checkpoint_json)
    model = build_model(meta.family, meta.config).for_task_(meta.task)
    state = {k: torch.from_numpy(np.asarray(v, order="C")) for k, v in weights.items()}
    model.load_state_dict(state)
    threshold = float(meta.metrics.get("referral_threshold", 0.5))
    preds = dataclasses.replace(
        predict(model, heldout, meta.preprocess), referral_threshold=threshold
    )
    m = screening_metrics(preds, resamples=0)
    return {k: 100.0 * float(m[k].value) for k in SCORED if k in m} | {
        "images": float(len(heldout))
    }
