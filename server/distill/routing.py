"""Multi-teacher distillation with routing: a small learned router weights each teacher's soft
targets per image (for example one teacher per site or camera); the baseline averages them.

The teachers and the router are wrapped as one teacher whose logits are ``T * log`` of the mixed
soft targets at temperature ``T``, so the ordinary distillation trainer (which applies
``softmax(logits / T)``) distils from exactly that mixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import TaskSpec
from models.nets import FundusNet
from server.distill.config import DistillConfig
from server.distill.trainer import Trainer
from server.training import ModelRef, TrainingData, pick_device, point_metrics, predict

_EPS = 1e-6


class Router(nn.Module):
    """A tiny CNN on the image: one weight per teacher (softmax over its logits)."""

    def __init__(self, teachers: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.logits = nn.Linear(2 * width, teachers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Routing weights (N x teachers), each row summing to 1."""
        return torch.softmax(self.logits(self.features(x)), dim=1)


class RoutedTeacher(FundusNet):
    """Several frozen teachers as one: their soft targets mixed per image by the router (or
    averaged when there is none), returned as logits at ``temperature``."""

    family = "routed-teachers"

    def __init__(
        self, teachers: list[FundusNet], router: Router | None, temperature: float = 1.0
    ) -> None:
        super().__init__({"teachers": len(teachers)}, 1)
        if not teachers:
            raise ValueError("multi-teacher distillation needs at least one teacher")
        self.for_task_(_shared_task(teachers))
        self.teachers = nn.ModuleList(teachers)
        self.router = router
        self.temperature = temperature

    @property
    def tap_names(self) -> tuple[str, ...]:
        """No feature taps: distil from the mixed outputs only."""
        return ()

    def _taps(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(())

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Each teacher's weight for each image (N x teachers)."""
        if self.router is None:
            k = len(self.teachers)
            return torch.full((x.shape[0], k), 1.0 / k, device=x.device)
        return self.router(x)

    def forward_taps(
        self, x: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Mixed outputs (``T * log`` of the mixed soft targets); no taps."""
        t, names = self.temperature, self.task.outputs
        outs = [m(x) for m in self.teachers]
        w = self.weights(x).unsqueeze(2)
        probs = torch.stack([torch.softmax(o[names.classes] / t, 1) for o in outs], 1)
        mixed = {names.classes: t * (w * probs).sum(1).clamp_min(_EPS).log()}
        if self.task.quality_head:
            quality = torch.stack([torch.sigmoid(o[names.quality] / t) for o in outs], 1)
            mixed[names.quality] = t * torch.logit((w * quality).sum(1).clamp(_EPS, 1 - _EPS))
        return mixed, {}


def _shared_task(teachers: list[FundusNet]) -> TaskSpec:
    """The one task every teacher answers; its classes must be one softmax to mix."""
    task = teachers[0].task
    others = sorted({m.task.name for m in teachers if m.task != task})
    if others:
        raise ValueError(f"teachers answer different tasks: {task.name} and {', '.join(others)}")
    if task.kind not in ("grading", "multiclass"):
        raise ValueError(
            f"multi-teacher routing mixes softmax outputs; task {task.name} is {task.kind}: "
            "distil from one teacher instead"
        )
    return task


@dataclass(frozen=True)
class RouterConfig:
    """How the router is trained (teachers frozen, on the training split's labels)."""

    epochs: int = 3
    lr: float = 3e-3
    batch_size: int = 64
    width: int = 8
    seed: int = 0
    balance: float = 0.1
    """Weight of the load-balancing term ``KL(mean routing weights || uniform)`` per batch: it
    keeps the router from settling on the one teacher that is best on average, while leaving
    each image free to pick its own."""

    def __post_init__(self) -> None:
        bad = self.epochs < 1 or self.lr <= 0 or self.batch_size < 2 or self.width < 1
        if bad or self.balance < 0:
            raise ValueError(f"bad router settings: {self}")


def _teacher_probs(
    teachers: list[FundusNet], data: TrainingData, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each teacher's class probabilities (N, K, classes) and P(gradable) (N, K, 1; ones when
    the task has no quality head)."""
    grade, gradable = [], []
    for m in teachers:
        p = predict(m, data.train, data.spec, device=device)
        grade.append(torch.softmax(torch.from_numpy(p.grade_logits), 1))
        if p.gradable_logit is None:
            gradable.append(torch.ones(len(p.grade), 1, dtype=torch.float64))
        else:
            gradable.append(torch.sigmoid(torch.from_numpy(p.gradable_logit)))
    return torch.stack(grade, 1), torch.stack(gradable, 1)


def _imbalance(weights: torch.Tensor) -> torch.Tensor:
    """``KL(mean weight per teacher || uniform)``: 0 when the batch uses every teacher alike."""
    mean = weights.mean(0).clamp_min(_EPS)
    return (mean * (mean * weights.shape[1]).log()).sum()


def train_router(
    teachers: list[FundusNet], data: TrainingData, cfg: RouterConfig, device: str = "auto"
) -> Router:
    """A router that maximises the likelihood of the labels under the teachers' mixture.

    Teachers are frozen; their predictions on the (unaugmented) training images are computed
    once. An image's best teacher gets the weight, so a router learns who is right where; the
    balancing term (``cfg.balance``) stops it from collapsing onto one teacher for every image.
    """
    dev = pick_device(device)
    task = _shared_task(teachers)
    probs, gprobs = _teacher_probs(teachers, data, dev)
    labels = torch.from_numpy(data.train.grade.astype(np.int64))
    gradable = torch.from_numpy(data.train.gradable.astype(np.float32))
    torch.manual_seed(cfg.seed)
    router = Router(len(teachers), cfg.width).to(dev)
    opt = torch.optim.Adam(router.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    n = len(data.train)
    router.train()
    for _ in range(cfg.epochs):
        order = rng.permutation(n)
        for b in range(0, n, cfg.batch_size):
            idx = np.sort(order[b : b + cfg.batch_size])
            x = torch.from_numpy(data.spec.normalise(data.train.images[idx])).to(dev)
            w = router(x)
            y, known = labels[idx].to(dev), labels[idx].to(dev) >= 0
            p = (w.unsqueeze(2) * probs[idx].to(dev)).sum(1)
            loss = -p[known].gather(1, y[known].unsqueeze(1)).clamp_min(_EPS).log().mean()
            loss = torch.nan_to_num(loss)
            if task.quality_head:
                g = (w.unsqueeze(2) * gprobs[idx].to(dev)).sum(1).reshape(-1)
                g = g.clamp(_EPS, 1 - _EPS)
                loss = loss + F.binary_cross_entropy(g, gradable[idx].to(dev))
            loss = loss + cfg.balance * _imbalance(w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return router.eval()


def _teacher_settings(cfg: DistillConfig) -> tuple[DistillConfig, float]:
    lc = cfg.loss
    if lc.temperature.end is not None and lc.temperature.end != lc.temperature.start:
        raise ValueError(
            "multi-teacher distillation mixes soft targets at one temperature: give "
            f"loss.temperature a constant value (got {lc.temperature.start} -> "
            f"{lc.temperature.end})"
        )
    # the mixture has no feature taps: distil outputs only, without the feature monitors
    loss = lc.model_copy(update={"feature_weight": 0.0})
    monitor = cfg.monitor.model_copy(update={"enabled": False})
    return cfg.model_copy(update={"loss": loss, "monitor": monitor}), lc.temperature.start


@dataclass
class MultiTeacherOutcome:
    """The distilled student and what the report shows."""

    student: FundusNet
    mode: str
    val: dict[str, float]
    teacher_val: dict[str, float]
    """Validation metrics of the mixture itself (routed or averaged teachers)."""
    mean_weights: list[float]
    """Average routing weight of each teacher over the validation images."""


def distil_multi_teacher(
    student: FundusNet,
    teachers: list[FundusNet],
    data: TrainingData,
    cfg: DistillConfig,
    *,
    mode: Literal["routed", "averaged"] = "routed",
    router: RouterConfig | None = None,
) -> MultiTeacherOutcome:
    """Distil ``student`` (in place) from ``teachers`` mixed per image by a trained router
    (``routed``) or equally (``averaged``), for ``cfg.train.epochs``."""
    cfg, temperature = _teacher_settings(cfg)
    route = None
    if mode == "routed":
        route = train_router(
            teachers, data, router or RouterConfig(seed=cfg.seed), cfg.train.device
        )
    elif mode != "averaged":
        raise ValueError(f"mode must be 'routed' or 'averaged', got {mode!r}")
    mixture = RoutedTeacher(teachers, route, temperature)
    device = pick_device(cfg.train.device)
    mixture.to(device).eval()
    with torch.no_grad():
        x = torch.from_numpy(data.spec.normalise(data.val.pixels())).to(device)
        mean_w = mixture.weights(x).mean(0).cpu().tolist()
    teacher_val = point_metrics(predict(mixture, data.val, data.spec, device=device))
    student_cfg = cfg.model_copy(
        update={"student": ModelRef(name=student.family, config=dict(student.config))}
    )
    Trainer(student_cfg, student, mixture, data, None).fit(resume=False)
    val = point_metrics(predict(student, data.val, data.spec, device=device))
    return MultiTeacherOutcome(student, mode, val, teacher_val, mean_w)
