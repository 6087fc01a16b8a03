"""One device's part of a round: train the deployed student on reviewed cases, evaluate held-out.

Plain functions over a model and arrays, so they are unit-tested without Flower. The cases carry
the deployed model's task (:class:`~models.TaskSpec`); the loss follows its kind:

``alpha * T^2 * KL(deployed || student) + (1 - alpha) * CE_w(label) + mu/2 * ||w - w_global||^2``

(distillation from the model the device serves, so adaptation does not forget, and the FedProx
proximal term towards the round's global weights; ``CE_w`` weighs each class by its share of the
device's cases to the power ``-class_balance``, because referable cases are rare in clinics).
Softmax cross-entropy and KL for ``grading`` and ``multiclass``; for ``binary`` (one logit) the
weighted sigmoid cross-entropy and the binary KL; for ``multilabel`` the same per finding
(unweighted). With a quality head, ``alpha * MSE`` on the quality logit against the deployed
model (reviewed cases are all gradable, so it has no label to learn from).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.fl.protocol import (
    M_EVAL_ACCURACY,
    M_EVAL_NUM_EXAMPLES,
    M_EVAL_REFERABLE_SENSITIVITY,
    M_NUM_EXAMPLES,
    M_TRAIN_LOSS,
    NORM_STATS_AUTO_BELOW,
    RoundConfig,
)
from edge_agent.screening import propose
from models import DR_GRADING, PreprocessSpec, TaskSpec, TaskSpecError, images_per_batch

__all__ = [
    "M_EVAL_REFERABLE_POSITIVES",
    "M_EVAL_SITE",
    "SITE_KEYS",
    "Declined",
    "LocalCases",
    "class_weights",
    "evaluate_local",
    "freezes_norm",
    "get_weights",
    "local_loss",
    "proximal_term",
    "set_weights",
    "train_local",
]

# Extra reply metric: referable cases in the held-out share (weights the sensitivity average).
M_EVAL_REFERABLE_POSITIVES = "eval-referable-positives"
# The site's own threshold for the evaluated weights, from its held-out reviewed cases
# (``edge_agent.screening.propose``): ``threshold`` -1 while ``needed`` > 0 more referable cases
M_EVAL_SITE = "eval-site-"
SITE_KEYS = ("threshold", "sensitivity", "lower", "upper", "needed")


class Declined(Exception):
    """This device sits the round out; ``str(exc)`` is the reason sent to the server."""


@dataclass(frozen=True)
class LocalCases:
    """A device's reviewed cases: preprocessed uint8 images (N, S, S, C) and their labels, the
    class indices of ``task`` (for DR, grades 0-4), or for ``multilabel`` an N x L 0/1 matrix
    of the findings the clinician named.

    Raises :class:`~models.TaskSpecError` naming the value when a label is not of the task.
    """

    images: np.ndarray
    grades: np.ndarray
    preprocess: PreprocessSpec
    task: TaskSpec = DR_GRADING

    def __post_init__(self) -> None:
        size, channels = self.preprocess.size, self.preprocess.channels
        if self.images.ndim != 4 or self.images.shape[1:] != (size, size, channels):
            raise ValueError(
                f"cases: expected (N, {size}, {size}, {channels}) images, got {self.images.shape}"
            )
        if self.images.dtype != np.uint8:
            raise ValueError(f"cases: expected uint8 images, got {self.images.dtype}")
        if self.grades.shape[:1] != (len(self.images),):
            raise ValueError(f"cases: {len(self.images)} images but grades {self.grades.shape}")
        if self.task.kind == "multilabel" and len(self.grades) == 0:
            return
        self.task.check_labels(self.grades)
        if self.task.kind != "multilabel" and len(self.grades) and self.grades.min() < 0:
            raise TaskSpecError(
                f"task {self.task.name}: reviewed cases need a class, got label "
                f"{int(self.grades.min())}"
            )

    def __len__(self) -> int:
        return len(self.grades)

    def subset(self, index: np.ndarray) -> LocalCases:
        """The cases at ``index``."""
        return LocalCases(self.images[index], self.grades[index], self.preprocess, self.task)

    def split(self, heldout_fraction: float) -> tuple[LocalCases, LocalCases]:
        """(train, held-out). A case's side depends only on its pixels, so it never moves
        between rounds as new cases arrive (held-out cases are never trained on)."""
        if len(self) == 0 or heldout_fraction <= 0:
            return self, self.subset(np.zeros(0, dtype=np.int64))
        buckets = np.array(
            [
                int.from_bytes(hashlib.blake2b(img.tobytes(), digest_size=4).digest(), "big")
                % 10_000
                for img in self.images
            ]
        )
        held = buckets < round(heldout_fraction * 10_000)
        return self.subset(np.flatnonzero(~held)), self.subset(np.flatnonzero(held))


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as numpy arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Load numpy weights (state_dict names); raises ``ValueError`` naming what does not fit."""
    state = model.state_dict()
    missing = sorted(set(state) - set(weights))
    extra = sorted(set(weights) - set(state))
    if missing or extra:
        raise ValueError(f"weights do not fit the model: missing {missing[:3]}, extra {extra[:3]}")
    tensors = {}
    for name, target in state.items():
        array = np.asarray(weights[name])
        if tuple(array.shape) != tuple(target.shape):
            raise ValueError(f"weights: {name!r} is {array.shape}, model has {tuple(target.shape)}")
        tensors[name] = torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype)
    model.load_state_dict(tensors)


def proximal_term(model: nn.Module, reference: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``1/2 * sum ||w - w_ref||^2`` over the trainable parameters (FedProx, without mu)."""
    total = torch.zeros(())
    for name, param in model.named_parameters():
        if param.requires_grad:
            total = total + (param - reference[name]).pow(2).sum()
    return 0.5 * total


def class_weights(grades: np.ndarray, power: float, num_classes: int) -> np.ndarray:
    """Per-class loss weights ``share ** -power`` over ``num_classes`` classes, scaled so the
    mean weight per case is 1 (absent classes get 1)."""
    counts = np.bincount(grades, minlength=num_classes).astype(np.float64)
    weights = np.ones(num_classes)
    present = counts > 0
    if power == 0.0 or not present.any():
        return weights.astype(np.float32)
    weights[present] = (counts[present] / counts.sum()) ** -power
    weights[present] *= counts.sum() / (counts[present] * weights[present]).sum()
    return weights.astype(np.float32)


def local_loss(
    task: TaskSpec,
    out: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor] | None,
    labels: torch.Tensor,
    config: RoundConfig,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The device's loss on one batch by the task's kind (see the module docstring); ``out``
    and ``teacher`` are keyed by the task's output names, ``weight`` is per class."""
    logits = out[task.outputs.classes]
    alpha, t = config.distill_alpha, config.distill_temperature
    sigmoid = task.kind in ("binary", "multilabel")
    if sigmoid:
        z = logits.reshape(labels.shape)
        w = weight[labels] if weight is not None else None  # binary only: multilabel is plain
        hard = F.binary_cross_entropy_with_logits(z, labels.float(), weight=w)
    else:
        hard = F.cross_entropy(logits, labels, weight=weight)
    if teacher is None or alpha == 0.0:
        return hard
    if sigmoid:
        soft = _binary_kl(z / t, teacher[task.outputs.classes].reshape(labels.shape) / t)
    else:
        soft = F.kl_div(
            F.log_softmax(logits / t, dim=1),
            F.log_softmax(teacher[task.outputs.classes] / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
    loss = alpha * (t * t) * soft + (1 - alpha) * hard
    if task.quality_head:
        quality = task.outputs.quality
        loss = loss + alpha * F.mse_loss(out[quality], teacher[quality])
    return loss


def _binary_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(student)))``."""
    p = torch.sigmoid(teacher)
    cross = F.binary_cross_entropy_with_logits(student, p)
    return cross - F.binary_cross_entropy_with_logits(teacher, p)


def _check_task(model: nn.Module, cases: LocalCases) -> None:
    task = getattr(model, "task", None)
    if task is not None and task != cases.task:
        raise ValueError(
            f"the model answers task {task.name}, the cases are labelled for task "
            f"{cases.task.name}: build the model for the cases' task (for_task_)"
        )


def freezes_norm(config: RoundConfig, train_cases: int) -> bool:
    """Whether local training keeps the global BatchNorm statistics (see ``norm-stats``)."""
    if config.norm_stats == "auto":
        return train_cases < NORM_STATS_AUTO_BELOW
    return config.norm_stats == "frozen"


def _train_mode(model: nn.Module, freeze_norm: bool) -> None:
    model.train()
    if freeze_norm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # normalise with the global running statistics, leave them as is


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


def train_local(
    model: nn.Module,
    global_weights: Mapping[str, np.ndarray],
    cases: LocalCases,
    config: RoundConfig,
    *,
    teacher: nn.Module | None = None,
    pause: Callable[[], object] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train ``model`` from ``global_weights`` on the train share of ``cases``.

    ``teacher`` is the model the device serves (frozen; None: no distillation). ``pause`` is
    called between batches (it blocks while screening is busy). Returns the new weights and the
    reply metrics (train size and loss, held-out accuracy and referable sensitivity). Raises
    :class:`Declined` when there are fewer than ``config.min_cases`` cases to train on.
    """
    _check_task(model, cases)
    if len(cases) < config.min_cases:
        raise Declined(f"{len(cases)} reviewed cases, fewer than min-cases={config.min_cases}")
    train, heldout = cases.split(config.heldout_fraction)
    if len(train) == 0:
        raise Declined("no reviewed cases left to train on after the held-out share")
    set_weights(model, global_weights)
    anchor = {k: v.detach().clone() for k, v in model.named_parameters()}
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    optimiser = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    rng = np.random.default_rng(config.server_round)
    task = cases.task
    if task.kind == "multilabel":
        y_all, weight = torch.from_numpy(train.grades.astype(np.float32)), None
    else:
        y_all = torch.from_numpy(train.grades.astype(np.int64))
        balance = class_weights(train.grades, config.class_balance, task.num_classes)
        weight = torch.from_numpy(balance)
    batch = min(config.batch_size, len(train))
    freeze_norm = freezes_norm(config, len(train))
    losses: list[float] = []
    # dropout draws from torch's generator: seeded by the round (and the caller's state kept),
    # so a device's update is reproducible, as the batch order and flips already are
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.server_round)
        for _ in range(config.local_epochs):
            _train_mode(model, freeze_norm)
            losses = []
            for index in _batches(len(train), batch, rng):
                if len(index) < 2 and len(train) >= 2 and not freeze_norm:
                    continue  # BatchNorm cannot train on one image
                if pause is not None:
                    pause()
                # normalised a batch at a time: float32 copies of every case at once would be
                # 4x the cases' own memory (a Jetson shares its memory with the GPU)
                x = torch.from_numpy(train.preprocess.normalise(train.images[index]))
                y = y_all[index]
                flip = torch.from_numpy(rng.random(len(index)) < 0.5)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
                with torch.no_grad():
                    target = teacher(x) if teacher is not None else None
                loss = local_loss(task, model(x), target, y, config, weight)
                total = loss + config.proximal_mu * proximal_term(model, anchor)
                optimiser.zero_grad(set_to_none=True)
                total.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
    metrics: dict[str, float] = {
        M_NUM_EXAMPLES: float(len(train)),
        M_TRAIN_LOSS: float(np.mean(losses)) if losses else float("nan"),
    }
    metrics.update(evaluate_local(model, heldout))
    return get_weights(model), metrics


def _class_logits(model: nn.Module, cases: LocalCases) -> np.ndarray:
    """The model's class logits on every case, in batches of about 4 M pixels."""
    spec = cases.preprocess
    step = images_per_batch(spec.size)
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(cases), step):
            x = torch.from_numpy(spec.normalise(cases.images[start : start + step]))
            parts.append(model(x)[cases.task.outputs.classes].numpy())
    return np.concatenate(parts)


def _site_point(
    scores: np.ndarray, referable: np.ndarray, current: float, task: TaskSpec
) -> dict[str, float]:
    found = propose(scores, referable, current, target=task.referral.target_sensitivity)
    lower, upper = found.interval or (-1.0, -1.0)
    values = (found.threshold, found.sensitivity, lower, upper, found.needed)
    return {
        M_EVAL_SITE + k: -1.0 if v is None else float(v)
        for k, v in zip(SITE_KEYS, values, strict=True)
    }


def evaluate_local(
    model: nn.Module, cases: LocalCases, referral_threshold: float = 0.5, site_point: bool = False
) -> dict[str, float]:
    """Accuracy (the class), referable sensitivity (the task's referral rule, at
    ``referral_threshold`` on its referral score) and counts on ``cases`` (all zero when
    empty); with ``site_point``, the threshold these cases propose (``M_EVAL_SITE`` keys)."""
    _check_task(model, cases)
    task = cases.task
    positives = task.is_referable(cases.grades)
    if len(cases) == 0:
        correct, scores = np.zeros(0, bool), np.zeros(0)
    else:
        logits = _class_logits(model, cases)
        if task.kind == "multilabel":  # label-wise: each finding said present or absent rightly
            correct = (task.probabilities(logits) >= 0.5) == cases.grades.astype(bool)
        else:
            correct = task.probabilities(logits).argmax(1) == cases.grades
        scores = task.referral_score(logits)
    detected = scores >= referral_threshold
    n_pos = int(positives.sum())
    point = _site_point(scores, positives, referral_threshold, task) if site_point else {}
    return point | {
        M_EVAL_ACCURACY: float(correct.mean()) if len(cases) else 0.0,
        M_EVAL_REFERABLE_SENSITIVITY: float(detected[positives].mean()) if n_pos else 0.0,
        M_EVAL_NUM_EXAMPLES: float(len(cases)),
        M_EVAL_REFERABLE_POSITIVES: float(n_pos),
    }
