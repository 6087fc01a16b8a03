"""Distillation losses: soft targets at a temperature, hard labels, gradability, and the
task's loss that combines them by the task's kind."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models import TaskSpec
from models.datasets import UNKNOWN_GRADE


def soft_target_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student / t, dim=1)
    log_p_t = F.log_softmax(teacher / t, dim=1)
    return (t * t) * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def hard_label_loss(student: torch.Tensor, grade: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the images with a known grade (0 when there are none)."""
    known = grade != UNKNOWN_GRADE
    if not bool(known.any()):
        return student.sum() * 0.0
    return F.cross_entropy(student[known], grade[known])


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    grade: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL + (1 - alpha) * CE``; plain CE when there is no teacher."""
    hard = hard_label_loss(student, grade)
    if teacher is None or alpha == 0.0:
        return hard
    return alpha * soft_target_loss(student, teacher, temperature) + (1 - alpha) * hard


def gradable_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    gradable: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """The same mix for the one-logit gradability head (binary KL against the teacher)."""
    return sigmoid_distillation_loss(student, teacher, gradable.float(), alpha, temperature)


def sigmoid_distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    target: torch.Tensor,
    alpha: float,
    temperature: float,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * T^2 * binary KL + (1 - alpha) * BCE`` for independent sigmoid logits (the
    quality head, a binary task's one logit, each label of a multilabel task); ``known`` masks
    the entries with a label (all by default)."""
    s = student.reshape(target.shape)
    mask = torch.ones_like(target) if known is None else known.reshape(target.shape).float()
    count = mask.sum().clamp(min=1.0)
    hard = (F.binary_cross_entropy_with_logits(s, target, reduction="none") * mask).sum() / count
    if teacher is None or alpha == 0.0:
        return hard
    t = temperature
    z = teacher.reshape(target.shape) / t
    soft_target = torch.sigmoid(z)
    soft = F.binary_cross_entropy_with_logits(s / t, soft_target, reduction="none").mean()
    soft = soft - F.binary_cross_entropy_with_logits(z, soft_target, reduction="none").mean()
    return alpha * (t * t) * soft + (1 - alpha) * hard


@dataclass(frozen=True)
class Mix:
    """How one step weighs its terms: the teacher's share, the temperature, the quality head."""

    alpha: float
    temperature: float
    quality_weight: float


def task_loss(
    task: TaskSpec,
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor] | None,
    labels: torch.Tensor,
    gradable: torch.Tensor,
    mix: Mix,
) -> torch.Tensor:
    """The student's loss on one batch, by the task's kind: softmax cross-entropy and KL for
    ``grading`` and ``multiclass``, sigmoid BCE and binary KL for ``binary`` and each label of
    ``multilabel``; plus the quality head's, weighted, when the task has one. Labels -1 (and
    ungradable images, for the class terms) teach nothing but the quality head."""
    name, quality = task.outputs.classes, task.outputs.quality
    s = student[name].float()
    t = teacher[name].float() if teacher else None
    if task.kind in ("grading", "multiclass"):
        loss = distillation_loss(s, t, labels, mix.alpha, mix.temperature)
    elif task.kind == "binary":
        known = labels != UNKNOWN_GRADE
        target = labels.clamp(min=0).float()
        loss = sigmoid_distillation_loss(s, t, target, mix.alpha, mix.temperature, known)
    else:  # multilabel: a row of -1 (an ungradable or unlabelled image) has no findings
        known = labels >= 0
        target = labels.float().clamp(min=0)
        loss = sigmoid_distillation_loss(s, t, target, mix.alpha, mix.temperature, known)
    if task.quality_head:
        tq = teacher[quality].float() if teacher else None
        loss = loss + mix.quality_weight * gradable_loss(
            student[quality].float(), tq, gradable, mix.alpha, mix.temperature
        )
    return loss


def label_loss(
    task: TaskSpec, student: dict[str, torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """The task's loss against labels alone (no teacher, no quality head)."""
    mix = Mix(alpha=0.0, temperature=1.0, quality_weight=0.0)
    plain = task.model_copy(update={"quality_head": False})
    return task_loss(plain, student, None, labels, labels.new_zeros(labels.shape), mix)
