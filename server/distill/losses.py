"""Distillation losses: soft targets at a temperature, hard labels, gradability, features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    s = student.reshape(-1)
    hard = F.binary_cross_entropy_with_logits(s, gradable.float())
    if teacher is None or alpha == 0.0:
        return hard
    t = temperature
    target = torch.sigmoid(teacher.reshape(-1) / t)
    soft = F.binary_cross_entropy_with_logits(s / t, target) - F.binary_cross_entropy_with_logits(
        teacher.reshape(-1) / t, target
    )
    return alpha * (t * t) * soft + (1 - alpha) * hard
