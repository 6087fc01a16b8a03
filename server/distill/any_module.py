"""Distillation of any ``nn.Module`` through the Python API: token inputs, dict outputs, hooks.

The image-first :class:`~server.distill.trainer.Trainer` works on Fovea's prepared fundus data;
this loop takes whatever batches a model eats (a tensor, a dict of tensors such as
``input_ids`` and ``attention_mask``, or either with targets) and whatever it returns (a tensor,
a dict or a Hugging Face ``ModelOutput``). The loss is ``alpha * T^2 * KL`` on the logits plus
``(1 - alpha) * CE`` when a batch has labels (KL alone when it has none), plus feature
distillation on hidden states taken by forward hooks and matched through the projectors.
Knowledge retention is measured on the first batch before training and after every epoch (and
every ``monitor_every`` steps), with the same guard as the image trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from server.distill.batches import Inputs, call, pick_logits, position_masks, split_batch, to_device
from server.distill.config import MonitorConfig
from server.distill.hidden_states import candidate_taps, forward_taps
from server.distill.losses import soft_target_loss
from server.distill.monitors import RetentionGuard, describe_event, feature_agreement
from server.distill.projectors import FeatureAligner, auto_layer_map
from server.training import Reporter, pick_device


@dataclass(frozen=True)
class ModuleDistillConfig:
    """How :func:`distill_module` distils: loss mix, taps, optimiser, monitors."""

    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 2.0
    alpha: float = 0.5
    """Share of the soft-target loss when a batch has labels (without labels it is all soft)."""
    output_key: str | None = None
    """Which output holds the logits; None: ``logits`` when there is one, else the first."""
    label_key: str = "labels"
    """The dict entry of a batch holding the targets (taken out before the model is called)."""
    feature_weight: float = 1.0
    feature_loss: Literal["cosine", "mse"] = "cosine"
    layer_map: Mapping[str, str] | Literal["auto"] = "auto"
    """Student module name -> teacher module name; "auto": the repeated blocks of each (e.g.
    ``encoder.layer.N``) paired by relative depth, the deepest ``auto_layers`` of the student."""
    auto_layers: int = 2
    mask_key: str | None = "attention_mask"
    """Batch entry (N x L) whose zeros mark token positions the feature loss ignores."""
    max_grad_norm: float | None = 1.0
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    monitor_every: int = 0
    """Also measure retention every this many steps (0: only before training and per epoch)."""
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.lr <= 0 or self.auto_layers < 1 or self.monitor_every < 0:
            raise ValueError(
                "epochs and auto_layers must be >= 1, lr > 0 and monitor_every >= 0; got "
                f"{self.epochs}, {self.auto_layers}, {self.lr}, {self.monitor_every}"
            )
        if not 0.0 <= self.alpha <= 1.0 or not 0.5 <= self.temperature <= 20.0:
            raise ValueError(
                f"alpha must be in [0, 1] and temperature in [0.5, 20]; got {self.alpha}, "
                f"{self.temperature}"
            )
        if self.feature_weight < 0 or self.feature_loss not in ("cosine", "mse"):
            raise ValueError(
                f"feature_weight must be >= 0 and feature_loss 'cosine' or 'mse'; got "
                f"{self.feature_weight}, {self.feature_loss!r}"
            )


@dataclass
class ModuleDistillResult:
    """What :func:`distill_module` did: the student (trained in place), the layer map, the loss
    of every step, the monitors' measurements and the guard's alerts."""

    student: nn.Module
    layer_map: dict[str, str]
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per measurement: epoch, step, retention, cka, agreement, ..."""
    events: list[dict[str, Any]] = field(default_factory=list)
    aligner: FeatureAligner | None = None


def logit_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    target: torch.Tensor | None,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Soft targets at ``temperature`` (weight ``alpha``) plus hard labels when there are any.

    Logits have their classes last (N x C, or N x L x C per token); integer targets are class
    indices (-100: ignored), float targets of the logits' shape are regressed (MSE). A single
    logit is matched to the teacher's by MSE.
    """
    s = student.float().reshape(-1, student.shape[-1])
    soft: torch.Tensor | None = None
    if teacher is not None:
        t = teacher.detach().float().reshape(-1, teacher.shape[-1])
        soft = F.mse_loss(s, t) if s.shape[1] == 1 else soft_target_loss(s, t, temperature)
    if target is None:
        if soft is None:
            raise ValueError("nothing to learn from: no teacher and no labels")
        return soft
    if target.is_floating_point():
        hard = F.mse_loss(student.float(), target.float().reshape(student.shape))
    else:
        hard = F.cross_entropy(s, target.reshape(-1).long(), ignore_index=-100)
    return hard if soft is None else alpha * soft + (1 - alpha) * hard


def batch_loss(
    student: nn.Module,
    teacher: nn.Module | None,
    batch: Any,
    config: ModuleDistillConfig,
    device: torch.device | None = None,
) -> torch.Tensor:
    """:func:`logit_loss` of ``student`` on one batch, against ``teacher``'s logits (no grad)
    and the batch's labels."""
    inputs, target = split_batch(batch, config.label_key)
    if device is not None:
        inputs = to_device(inputs, device)
        target = None if target is None else target.to(device)
    t_logits = None
    if teacher is not None:
        with torch.no_grad():
            t_logits = pick_logits(call(teacher, inputs), config.output_key)
    s_logits = pick_logits(call(student, inputs), config.output_key)
    return logit_loss(s_logits, t_logits, target, config.alpha, config.temperature)


def make_aligner(
    student: nn.Module, teacher: nn.Module, inputs: Inputs, config: ModuleDistillConfig
) -> FeatureAligner:
    """Projectors from the student's hidden states to the teacher's over the layer map (shapes
    found by one pass of each model on ``inputs``)."""
    given = None if config.layer_map == "auto" else dict(config.layer_map)
    key = config.output_key
    s_seen = candidate_taps(student, inputs, None if given is None else list(given), key)
    t_seen = candidate_taps(teacher, inputs, None if given is None else list(given.values()), key)
    s_taps = {k: (v[0], v[1], v[2]) for k, v in s_seen.maps.items()}
    t_taps = {k: (v[0], v[1], v[2]) for k, v in t_seen.maps.items()}
    mapping = given or auto_layer_map(s_taps, t_taps, config.auto_layers)
    if not mapping:
        raise ValueError("no hidden states to distil: set feature_weight to 0 or name a layer_map")
    return FeatureAligner(mapping, s_taps, t_taps, config.feature_loss)


@dataclass
class _Run:
    """One distillation in progress: the models, projectors, optimiser and guard."""

    teacher: nn.Module
    student: nn.Module
    aligner: FeatureAligner | None
    config: ModuleDistillConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    guard: RetentionGuard

    def knobs(self) -> tuple[float, float]:
        """(alpha, feature weight) with the guard's adjustments."""
        s, c = self.guard.strength, self.config
        return min(c.alpha + s.alpha_shift, max(c.alpha, 0.95)), c.feature_weight * s.feature_scale

    def step(self, batch: Any) -> float:
        """One optimiser step on ``batch``; its loss."""
        c = self.config
        inputs, target = split_batch(batch, c.label_key)
        inputs = to_device(inputs, self.device)
        target = None if target is None else target.to(self.device)
        alpha, weight = self.knobs()
        al = self.aligner
        s_names = list(al.layer_map) if al else []
        with torch.no_grad():
            t_out, t_taps = forward_taps(self.teacher, inputs, al.layer_map.values() if al else [])
        s_out, s_taps = forward_taps(self.student, inputs, s_names)
        t_logits = pick_logits(t_out, c.output_key)
        loss = logit_loss(pick_logits(s_out, c.output_key), t_logits, target, alpha, c.temperature)
        if al is not None:
            # with feature distillation off the projectors still learn (on detached features),
            # so that retention stays measurable without steering the student
            live = weight > 0
            used = s_taps if live else {k: v.detach() for k, v in s_taps.items()}
            feat = al.loss(used, t_taps, position_masks(inputs, c.mask_key, t_taps))
            loss = loss + (weight if live else 1.0) * feat
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.max_grad_norm:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, c.max_grad_norm)
        self.optimizer.step()
        return float(loss.detach())

    def set_lr(self) -> None:
        """The configured learning rate times the guard's scale."""
        for g in self.optimizer.param_groups:
            g["lr"] = self.config.lr * self.guard.strength.lr_scale


def _input_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, key: str | None
) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(pick_logits(model(x), key).float(), target)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.flatten(1)


def measure_module(
    run: _Run, inputs: Inputs, target: torch.Tensor | None = None
) -> dict[str, float]:
    """On one batch: retention and CKA over the layer map, the share of samples (tokens) where
    the student's top class is the teacher's, the soft-target loss, and, for float tensor
    inputs with class labels, gradient consistency. Models are left as found."""
    c, aligner = run.config, run.aligner
    assert aligner is not None
    modes = (run.student.training, aligner.training)
    run.student.eval()
    aligner.eval()
    try:
        with torch.no_grad():
            t_out, t_taps = forward_taps(run.teacher, inputs, aligner.layer_map.values())
            s_out, s_taps = forward_taps(run.student, inputs, aligner.layer_map)
            masks = position_masks(inputs, c.mask_key, t_taps)
            values = feature_agreement(aligner, s_taps, t_taps, masks)
            s_log, t_log = pick_logits(s_out, c.output_key), pick_logits(t_out, c.output_key)
            same = s_log.argmax(-1) == t_log.argmax(-1)
            values["agreement"] = float(same.float().mean())
            values["soft_loss"] = float(logit_loss(s_log, t_log, None, 1.0, c.temperature))
        if (
            isinstance(inputs, torch.Tensor)
            and inputs.is_floating_point()
            and target is not None
            and not target.is_floating_point()
            and s_log.ndim == 2
        ):
            g_s = _input_gradient(run.student, inputs, target, c.output_key)
            g_t = _input_gradient(run.teacher, inputs, target, c.output_key)
            values["gradient_consistency"] = float(F.cosine_similarity(g_s, g_t, dim=1).mean())
    finally:
        run.student.train(modes[0])
        aligner.train(modes[1])
    return values


def distill_module(
    teacher: nn.Module,
    student: nn.Module,
    batches: Iterable[Any],
    config: ModuleDistillConfig | None = None,
    *,
    report: Reporter | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> ModuleDistillResult:
    """Distil ``teacher`` into ``student`` (trained in place) over ``batches``.

    ``batches`` is re-iterable (a list, a DataLoader) of tensors, dicts of tensors (token ids
    and masks included; a ``labels`` entry is the target) or (inputs, targets) pairs; its first
    batch finds the hidden states to tap and is the monitors' fixed probe. The teacher is frozen
    while it teaches; both models are left in the mode they came in. ``report`` gets progress
    (description, done, total), ``log`` one line per epoch and every monitor alert.
    """
    c = config or ModuleDistillConfig()
    if c.epochs > 1 and iter(batches) is batches:
        raise ValueError(
            f"batches is a one-shot iterator but epochs is {c.epochs}: pass a list or DataLoader"
        )
    first = next(iter(batches), None)
    if first is None:
        raise ValueError("batches is empty")
    device = pick_device(c.device)
    torch.manual_seed(c.seed)
    student_mode, grads = student.training, [p.requires_grad for p in teacher.parameters()]
    teacher.to(device).eval().requires_grad_(False)
    student.to(device)
    inputs, target = split_batch(first, c.label_key)
    inputs = to_device(inputs, device)
    target = None if target is None else target.to(device)
    aligner = None
    if c.feature_weight > 0 or c.monitor.enabled:
        aligner = make_aligner(student, teacher, inputs, c).to(device)
    params = [p for p in student.parameters() if p.requires_grad]
    params += list(aligner.parameters()) if aligner is not None else []
    optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    run = _Run(teacher, student, aligner, c, device, optimizer, RetentionGuard(c.monitor))
    layer_map = dict(aligner.layer_map) if aligner is not None else {}
    result = ModuleDistillResult(student, layer_map, aligner=aligner)
    if layer_map:
        log(f"feature distillation: {', '.join(f'{s} -> {t}' for s, t in layer_map.items())}")
    total = len(batches) if isinstance(batches, Sized) else 0
    try:
        _record(run, result, inputs, target, 0)
        for epoch in range(1, c.epochs + 1):
            student.train()
            start = len(result.losses)
            for i, batch in enumerate(batches, 1):
                result.losses.append(run.step(batch))
                if report is not None:
                    report(f"distil epoch {epoch}/{c.epochs}", i, max(total, i))
                if c.monitor_every and len(result.losses) % c.monitor_every == 0:
                    _record(run, result, inputs, target, epoch)
            done = result.losses[start:]
            line = f"epoch {epoch}: loss {sum(done) / max(len(done), 1):.4f}"
            values = _record(run, result, inputs, target, epoch)
            events: list[dict[str, Any]] = []
            if values is not None:
                line += f"  retention {values['retention']:.3f}"
                line += f"  agreement {values['agreement']:.3f}"
                events = run.guard.check(epoch, values, c.alpha)
                result.events.extend(events)
                run.set_lr()
            log(line)
            for e in events:
                log(describe_event(e))
    finally:
        student.train(student_mode)
        for p, g in zip(teacher.parameters(), grads, strict=True):
            p.requires_grad_(g)
    return result


def _record(
    run: _Run,
    result: ModuleDistillResult,
    inputs: Inputs,
    target: torch.Tensor | None,
    epoch: int,
) -> dict[str, Any] | None:
    """Measure on the probe batch and append to the history (when the monitors are on)."""
    if run.aligner is None or not run.config.monitor.enabled:
        return None
    values = measure_module(run, inputs, target)
    result.history.append({"epoch": epoch, "step": len(result.losses), **values})
    return result.history[-1]
