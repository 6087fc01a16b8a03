"""Temperature and weight search: short runs over T and alpha, chosen on validation."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models import PreprocessSpec, headline_metrics
from models.nets import FundusNet
from server.distill.config import DistillConfig
from server.distill.trainer import Trainer
from server.training import (
    Schedule,
    Splits,
    TrainingData,
    build_ref,
    pick_device,
    point_metrics,
    predict,
)


@dataclass(frozen=True)
class Trial:
    """One short run of the search."""

    temperature: float
    alpha: float
    val: dict[str, float]


def search_temperature(
    cfg: DistillConfig,
    teacher: FundusNet,
    spec: PreprocessSpec,
    splits: Splits,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Try every (temperature, alpha) of ``cfg.search`` briefly; return trials and the best."""
    sc = cfg.search
    if sc.metric not in headline_metrics(splits.task):
        raise ValueError(
            f"search.metric {sc.metric} is not a metric of task {splits.task.name}; choose one "
            f"of {', '.join(headline_metrics(splits.task))}"
        )
    rng = np.random.default_rng(cfg.seed)
    n = max(int(len(splits.train) * sc.fraction), cfg.train.batch_size)
    subset = splits.train.subset(np.sort(rng.choice(len(splits.train), n, replace=False)))
    trial_cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"epochs": sc.epochs}),
            "monitor": cfg.monitor.model_copy(update={"enabled": False}),
        }
    )
    device = pick_device(cfg.train.device)
    data = TrainingData(spec, subset, splits.val)

    def trial(c: DistillConfig, with_teacher: bool) -> dict[str, float]:
        torch.manual_seed(cfg.seed)
        student = build_ref(cfg.student, splits.task)
        t = teacher if with_teacher else None
        fit = Trainer(c, student, t, data, None).fit(resume=False)
        return point_metrics(predict(fit.student, splits.val, spec, device=device))

    trials: list[Trial] = []
    grid = list(itertools.product(sc.temperatures, sc.alphas))
    for i, (t, a) in enumerate(grid, 1):
        loss = trial_cfg.loss.model_copy(
            update={"alpha": Schedule(start=a), "temperature": Schedule(start=t)}
        )
        m = trial(trial_cfg.model_copy(update={"loss": loss}), with_teacher=True)
        trials.append(Trial(temperature=t, alpha=a, val=m))
        log(f"search {i}/{len(grid)}: T={t} alpha={a} -> val {sc.metric} {m[sc.metric]:.3f}")
    best = max(trials, key=lambda r: (r.val[sc.metric], r.val.get("kappa", 0.0)))
    result: dict[str, Any] = {
        "metric": sc.metric,
        "trials": [asdict(r) for r in trials],
        "best": {
            "temperature": best.temperature,
            "alpha": best.alpha,
            sc.metric: best.val[sc.metric],
        },
    }
    if sc.compare_without_teacher:
        # the honest reference: the same short run with no teacher at all
        alone = trial(trial_cfg, with_teacher=False)
        result["without_teacher"] = alone
        result["teacher_helps"] = best.val[sc.metric] > alone[sc.metric]
        log(
            f"search: without a teacher -> val {sc.metric} {alone[sc.metric]:.3f}"
            + (
                ""
                if result["teacher_helps"]
                else "  WARNING: no setting beat training without the teacher at this budget"
            )
        )
    return result
