"""Monitors: is the student really learning from its teacher, and what to do when it is not.

Knowledge retention is the mean cosine similarity between projected student features and the
teacher's features over the mapped layers, on a fixed probe batch (linear CKA beside it).
Gradient consistency is the cosine between the teacher's and the student's input-gradients of
their losses on the same batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from models.nets import FundusNet
from server.distill.config import MonitorConfig
from server.distill.losses import label_loss
from server.distill.projectors import FeatureAligner, centred


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment between two feature sets (N x ...), 0-1.

    Computed from the N x N Gram matrices, so the cost does not grow with feature size.
    """
    a, b = x.flatten(1).double(), y.flatten(1).double()
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    k, gram_b = a @ a.T, b @ b.T
    return float((k * gram_b).sum() / (k.norm() * gram_b.norm()).clamp_min(1e-12))


def _input_gradient(model: FundusNet, x: torch.Tensor, grade: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    loss = label_loss(model.task, model(x), grade)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.flatten(1)


@dataclass
class Probe:
    """A fixed batch the monitors look at every time."""

    x: torch.Tensor
    grade: torch.Tensor


def feature_agreement(
    aligner: FeatureAligner,
    student_taps: dict[str, torch.Tensor],
    teacher_taps: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Retention (mean cosine of centred projected-student and teacher features), linear CKA,
    and retention per teacher tap, from taps of one batch (``masks`` as in
    :meth:`FeatureAligner.loss`). Call under ``torch.no_grad`` with the aligner in eval mode."""
    projected = aligner.project(student_taps, teacher_taps)
    cos = []
    for t in aligner.layer_map.values():
        y, target = projected[t], teacher_taps[t]
        if masks is not None and t in masks:
            y, target = y * masks[t], target * masks[t]
        cos.append(F.cosine_similarity(centred(y), centred(target), dim=1).mean())
    cka = [linear_cka(student_taps[s], teacher_taps[t]) for s, t in aligner.layer_map.items()]
    return {
        "retention": float(torch.stack(cos).mean()),
        "cka": float(sum(cka) / len(cka)),
        **{
            f"retention/{t}": float(c) for t, c in zip(aligner.layer_map.values(), cos, strict=True)
        },
    }


def measure(
    student: FundusNet,
    teacher: FundusNet,
    aligner: FeatureAligner,
    probe: Probe,
) -> dict[str, float]:
    """Retention, CKA and gradient consistency on the probe batch (models left as found)."""
    modes = (student.training, aligner.training)
    student.eval()
    aligner.eval()
    try:
        with torch.no_grad():
            _, s_taps = student.forward_taps(probe.x)
            _, t_taps = teacher.forward_taps(probe.x)
            values = feature_agreement(aligner, s_taps, t_taps)
        g_s = _input_gradient(student, probe.x, probe.grade)
        g_t = _input_gradient(teacher, probe.x, probe.grade)
        consistency = F.cosine_similarity(g_s, g_t, dim=1).mean()
    finally:
        student.train(modes[0])
        aligner.train(modes[1])
    return {**values, "gradient_consistency": float(consistency)}


@dataclass
class Strength:
    """The distillation knobs the guard may turn."""

    feature_scale: float = 1.0
    alpha_shift: float = 0.0
    lr_scale: float = 1.0

    def as_dict(self) -> dict[str, float]:
        """Plain mapping (for logs and checkpoints)."""
        return {
            "feature_scale": self.feature_scale,
            "alpha_shift": self.alpha_shift,
            "lr_scale": self.lr_scale,
        }


@dataclass
class RetentionGuard:
    """After warm-up, when retention falls below the threshold: alert and strengthen distillation.

    Each adjustment raises the feature and soft-target weights and lowers the learning rate; the
    next measurement records what followed.
    """

    config: MonitorConfig
    strength: Strength = field(default_factory=Strength)
    adjustments: int = 0
    pending: dict[str, Any] | None = None
    last: float | None = None

    def check(
        self, epoch: int, values: dict[str, float], base_alpha: float
    ) -> list[dict[str, Any]]:
        """Events (alert, adjustment, follow-up) for one measurement after ``epoch`` (1-based)."""
        events: list[dict[str, Any]] = []
        retention = values["retention"]
        if self.pending is not None:
            events.append(
                {
                    "event": "followup",
                    "epoch": epoch,
                    "after_adjustment": self.pending["adjustment"],
                    "retention_before": self.pending["retention"],
                    "retention_after": retention,
                    "change": retention - self.pending["retention"],
                }
            )
            self.pending = None
        gain = None if self.last is None else retention - self.last
        self.last = retention
        if epoch <= self.config.warmup_epochs or retention >= self.config.retention_threshold:
            return events
        alert: dict[str, Any] = {
            "event": "alert",
            "epoch": epoch,
            "retention": retention,
            "threshold": self.config.retention_threshold,
            "gain": gain,
        }
        if gain is not None and gain >= self.config.min_gain:
            alert["action"] = f"none: retention still rising ({gain:+.3f} since last evaluation)"
            events.append(alert)
            return events
        if self.adjustments >= self.config.max_adjustments:
            alert["action"] = f"none: {self.adjustments} adjustments already made (max reached)"
            events.append(alert)
            return events
        before = self.strength.as_dict()
        c = self.config
        self.strength.feature_scale *= c.feature_weight_factor
        self.strength.alpha_shift = min(
            self.strength.alpha_shift + c.alpha_step, max(0.95 - base_alpha, 0.0)
        )
        self.strength.lr_scale *= c.lr_factor
        self.adjustments += 1
        alert["action"] = "strengthened distillation"
        alert["changes"] = {
            k: {"from": before[k], "to": v}
            for k, v in self.strength.as_dict().items()
            if v != before[k]
        }
        events.append(alert)
        self.pending = {"adjustment": self.adjustments, "retention": retention}
        return events

    def state(self) -> dict[str, Any]:
        """Everything needed to resume."""
        return {
            "strength": self.strength.as_dict(),
            "adjustments": self.adjustments,
            "pending": self.pending,
            "last": self.last,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state`."""
        self.strength = Strength(**state["strength"])
        self.adjustments = int(state["adjustments"])
        self.pending = state["pending"]
        self.last = state.get("last")


MeasureFn = Callable[[FundusNet, FundusNet, FeatureAligner, Probe], dict[str, float]]


def describe_event(e: dict[str, Any]) -> str:
    """One log line for a :class:`RetentionGuard` event: an alert (retention under the threshold,
    and what the guard changed) or the retention after an adjustment."""
    if e["event"] == "alert":
        changes = ", ".join(
            f"{k} {v['from']:.3g}->{v['to']:.3g}" for k, v in e.get("changes", {}).items()
        )
        return (
            f"ALERT epoch {e['epoch']}: knowledge retention {e['retention']:.3f} < "
            f"{e['threshold']}; {e['action']}{': ' + changes if changes else ''}"
        )
    return (
        f"after adjustment {e['after_adjustment']}: retention {e['retention_before']:.3f} -> "
        f"{e['retention_after']:.3f}"
    )
