"""Attention-head pruning: score heads (L1-regularised gates or gradients), slice the weakest away.

The pruned model is physically smaller: each block's q, k, v rows and output-projection columns of
a removed head are cut out, and the model's config records the heads left per block, so its
checkpoint JSON rebuilds it and it exports to ONNX like any other model. Fovea's ViT and the
attention of timm ViTs and Hugging Face image ViTs (:mod:`models.nets.attention`) are pruned alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from models.nets import FundusNet, HeadSite, SourceNet, ViT, count_parameters, head_rows, head_sites
from server.compress.steps import StepContext, StepResult, StepSettings, register_step
from server.distill import DistillConfig, Mix, Trainer, task_loss
from server.training import (
    ModelRef,
    TrainingData,
    loss_targets,
    pick_device,
    point_metrics,
    predict,
)

GATES = "head_gates"
"""Name of the gate module while it is attached to a model."""


@dataclass(frozen=True)
class HeadPruneConfig:
    """How heads are scored and how many stay."""

    keep_ratio: float = 0.6
    """Share of all heads kept (rounded), chosen globally by importance."""
    method: Literal["gates", "gradient"] = "gates"
    l1: float = 0.01
    """Weight of the L1 penalty on the gates (gates start at 1)."""
    min_heads_per_block: int = 1
    importance_batches: int = 8
    """Training batches the gradient method averages over."""

    def __post_init__(self) -> None:
        if not 0 < self.keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.method not in ("gates", "gradient"):
            raise ValueError(f"method must be 'gates' or 'gradient', got {self.method!r}")
        if self.l1 < 0 or self.min_heads_per_block < 1 or self.importance_batches < 1:
            raise ValueError(
                "l1 must be >= 0, min_heads_per_block and importance_batches >= 1, got "
                f"{self.l1}, {self.min_heads_per_block}, {self.importance_batches}"
            )


def attention_layers(model: nn.Module) -> list[HeadSite]:
    """The model's multi-head attentions, in forward order."""
    return head_sites(model)


def head_counts(model: nn.Module) -> list[int]:
    """Heads of each attention module."""
    return [a.count for a in attention_layers(model)]


class HeadGates(nn.Module):
    """One scalar gate per head, multiplying that head's output before the output projection."""

    def __init__(self, counts: list[int]) -> None:
        super().__init__()
        self.values = nn.ParameterList(nn.Parameter(torch.ones(h)) for h in counts)
        self._handles: list[Any] = []

    def l1(self) -> torch.Tensor:
        """Sum of the gates' absolute values."""
        return torch.stack([g.abs().sum() for g in self.values]).sum()


def attach_gates_(model: nn.Module, l1: float = 0.0) -> HeadGates:
    """Add gates to every attention module of ``model`` (as its submodule, so they train).

    With ``l1`` > 0 each gate's gradient gets ``l1 * sign(gate)``: the gradient of an L1 penalty,
    added without changing the trainer's loss.
    """
    layers = attention_layers(model)
    if not layers:
        name = getattr(model, "family", None) or type(model).__name__
        raise ValueError(f"model family {name!r} has no multi-head attention to prune")
    gates = HeadGates(head_counts(model)).to(next(model.parameters()).device)
    for attn, g in zip(layers, gates.values, strict=True):
        gates._handles.append(attn.out.register_forward_pre_hook(_gate_hook(g, attn.head_dim)))
        if l1 > 0:
            g.register_hook(lambda grad, g=g: grad + l1 * torch.sign(g.detach()))
    model.add_module(GATES, gates)
    return gates


def _gate_hook(gate: torch.Tensor, head_dim: int) -> Any:
    def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        (y,) = args
        shape = y.shape
        y = (y.reshape(*shape[:-1], -1, head_dim) * gate.view(-1, 1)).reshape(shape)
        return (y,)

    return hook


def detach_gates_(model: nn.Module, *, fold: bool = True) -> list[torch.Tensor]:
    """Remove the gates from ``model``; returns their values.

    With ``fold`` each gate is multiplied into its head's output-projection columns, so the model
    computes what it computed with the gates on.
    """
    gates = getattr(model, GATES, None)
    if not isinstance(gates, HeadGates):
        raise ValueError("model has no head gates attached")
    for h in gates._handles:
        h.remove()
    values = [g.detach().clone() for g in gates.values]
    delattr(model, GATES)
    if fold:
        with torch.no_grad():
            for attn, g in zip(attention_layers(model), values, strict=True):
                attn.out.weight.mul_(g.repeat_interleave(attn.head_dim).view(1, -1))
    return values


def _as_config(cfg: DistillConfig, model: FundusNet, epochs: int) -> DistillConfig:
    student = ModelRef(name=model.family, config=model.config)
    train = cfg.train.model_copy(update={"epochs": epochs})
    return cfg.model_copy(update={"student": student, "train": train})


def gate_importance(
    model: FundusNet,
    teacher: FundusNet | None,
    data: TrainingData,
    cfg: DistillConfig,
    prune: HeadPruneConfig,
) -> list[torch.Tensor]:
    """Distil ``model`` with L1-regularised head gates for ``cfg.train.epochs``; the gates' sizes.

    The gates are folded into the weights afterwards, so ``model`` keeps what it learned.
    """
    gates = attach_gates_(model, prune.l1)
    try:
        Trainer(_as_config(cfg, model, cfg.train.epochs), model, teacher, data, None).fit(
            resume=False
        )
    finally:
        values = detach_gates_(model, fold=True)
    del gates
    return [v.abs() for v in values]


def gradient_importance(
    model: FundusNet,
    teacher: FundusNet | None,
    data: TrainingData,
    cfg: DistillConfig,
    batches: int = 8,
) -> list[torch.Tensor]:
    """|dLoss/dgate| per head with gates at 1, summed over batches, normalised per block.

    The loss is the run's distillation loss (plain cross-entropy without a teacher).
    """
    device = pick_device(cfg.train.device)
    model.to(device)
    gates = attach_gates_(model)
    total = [torch.zeros_like(g) for g in gates.values]
    rng = np.random.default_rng(cfg.seed)
    alpha, temp = cfg.loss.alpha.start, cfg.loss.temperature.start
    was = model.training
    model.eval()  # no dropout: the importance of the model as it will run
    try:
        for _ in range(batches):
            idx = np.sort(rng.choice(len(data.train), min(cfg.train.batch_size, len(data.train))))
            x = torch.from_numpy(data.spec.normalise(data.train.images[idx])).to(device)
            grade = torch.from_numpy(loss_targets(data.train, model.task)[idx]).to(device)
            t_out = None
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher.to(device).eval()(x)
            gradable = torch.from_numpy(data.train.gradable[idx].astype(np.float32)).to(device)
            loss = task_loss(model.task, model(x), t_out, grade, gradable, Mix(alpha, temp, 0.0))
            grads = torch.autograd.grad(loss, list(gates.values))
            for acc, g in zip(total, grads, strict=True):
                acc += g.abs()
    finally:
        detach_gates_(model, fold=False)
        model.train(was)
    return [t / t.norm().clamp_min(1e-12) for t in total]


def select_heads(
    importance: list[torch.Tensor], keep_ratio: float, min_per_block: int = 1
) -> list[list[int]]:
    """Indices of the heads to keep in each block: the most important overall, at least
    ``min_per_block`` in each."""
    counts = [len(v) for v in importance]
    total = sum(counts)
    n_keep = min(max(round(keep_ratio * total), min_per_block * len(counts)), total)
    keep: list[set[int]] = []
    for v in importance:
        top = torch.argsort(v, descending=True)[:min_per_block]
        keep.append({int(i) for i in top})
    ranked = sorted(
        ((float(v[h]), b, h) for b, v in enumerate(importance) for h in range(len(v))),
        reverse=True,
    )
    for _, b, h in ranked:
        if sum(len(k) for k in keep) >= n_keep:
            break
        keep[b].add(h)
    return [sorted(k) for k in keep]


def prune_heads_(model: FundusNet, keep: list[list[int]]) -> FundusNet:
    """Cut every head not in ``keep`` out of ``model`` (in place) and record the new head counts
    in its config; returns ``model``."""
    layers = attention_layers(model)
    if len(keep) != len(layers):
        raise ValueError(f"keep lists {len(keep)} blocks but the model has {len(layers)}")
    if not isinstance(model, ViT | SourceNet):
        raise ValueError(f"model family {model.family!r} has no 'heads' setting to update")
    for attn, heads in zip(layers, keep, strict=True):
        head_rows(heads, attn.count, attn.head_dim)  # refuse a bad list before cutting anything
    for attn, heads in zip(layers, keep, strict=True):
        attn.slice_(heads)
    model.config["heads"] = [len(k) for k in keep]
    if isinstance(model, ViT):
        model.config["head_dim"] = layers[0].head_dim
    return model


@dataclass(frozen=True)
class HeadPruneOutcome:
    """What pruning did: heads and parameters before and after, and the scores it used."""

    heads_before: list[int]
    heads_after: list[int]
    kept: list[list[int]]
    importance: list[list[float]]
    parameters_before: int
    parameters_after: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return dataclasses.asdict(self)


def prune_attention_heads_(
    model: FundusNet,
    teacher: FundusNet | None,
    data: TrainingData,
    cfg: DistillConfig,
    prune: HeadPruneConfig,
) -> HeadPruneOutcome:
    """Score ``model``'s heads by ``prune.method`` (gates train for ``cfg.train.epochs``), then
    cut it down to ``prune.keep_ratio`` of its heads in place. Recovery is the caller's."""
    if prune.method == "gates":
        importance = gate_importance(model, teacher, data, cfg, prune)
    else:
        importance = gradient_importance(model, teacher, data, cfg, prune.importance_batches)
    return cut_heads_(model, importance, prune, head_counts, prune_heads_)


def cut_heads_(
    model: nn.Module,
    importance: list[torch.Tensor],
    prune: HeadPruneConfig,
    counts: Callable[[Any], list[int]],
    slice_: Callable[[Any, list[list[int]]], object],
) -> HeadPruneOutcome:
    """Keep ``prune.keep_ratio`` of the heads by ``importance``, slicing them out of ``model``
    in place with ``slice_``; what changed, counted by ``counts``."""
    before, params = counts(model), count_parameters(model)
    keep = select_heads(importance, prune.keep_ratio, prune.min_heads_per_block)
    slice_(model, keep)
    return HeadPruneOutcome(
        heads_before=before,
        heads_after=counts(model),
        kept=keep,
        importance=[[round(float(x), 5) for x in v] for v in importance],
        parameters_before=params,
        parameters_after=count_parameters(model),
    )


def recover(
    model: FundusNet, teacher: FundusNet | None, data: TrainingData, cfg: DistillConfig
) -> FundusNet:
    """Distil ``model`` from ``teacher`` for ``cfg.train.epochs`` (after a structural change)."""
    Trainer(_as_config(cfg, model, cfg.train.epochs), model, teacher, data, None).fit(resume=False)
    return model


class PruneHeadsSettings(StepSettings):
    """``prune_heads`` step settings."""

    keep_ratio: float = Field(0.6, gt=0, le=1)
    method: Literal["gates", "gradient"] = "gates"
    l1: float = Field(0.01, ge=0)
    gate_epochs: int = Field(2, ge=1)
    recover_epochs: int = Field(3, ge=0)
    min_heads_per_block: int = Field(1, ge=1)
    importance_batches: int = Field(8, ge=1)


@register_step("prune_heads", PruneHeadsSettings)
def prune_heads_step(
    model: FundusNet, context: StepContext, settings: PruneHeadsSettings
) -> StepResult:
    """Score, prune to ``keep_ratio`` of the heads, then distil from the run's teacher."""
    data, cfg = context.data, context.distill
    device = pick_device(cfg.train.device)

    def val() -> dict[str, float]:
        return point_metrics(predict(model, data.val, data.spec, device=device))

    start = val()
    prune = HeadPruneConfig(
        keep_ratio=settings.keep_ratio,
        method=settings.method,
        l1=settings.l1,
        min_heads_per_block=settings.min_heads_per_block,
        importance_batches=settings.importance_batches,
    )
    gate_cfg = _as_config(cfg, model, settings.gate_epochs)
    outcome = prune_attention_heads_(model, context.teacher, data, gate_cfg, prune)
    context.log(
        f"prune_heads: {sum(outcome.heads_before)} -> {sum(outcome.heads_after)} heads "
        f"{outcome.heads_after}, {outcome.parameters_before} -> {outcome.parameters_after} params"
    )
    pruned = val()
    if settings.recover_epochs:
        recover(model, context.teacher, data, _as_config(cfg, model, settings.recover_epochs))
    end = val()
    context.log(
        f"prune_heads: val accuracy {start['accuracy']:.3f} -> {pruned['accuracy']:.3f} pruned "
        f"-> {end['accuracy']:.3f} recovered"
    )
    return StepResult(
        model=model,
        metrics=end,
        details={
            **outcome.as_dict(),
            "method": settings.method,
            "val_accuracy": {
                "before": start["accuracy"],
                "pruned": pruned["accuracy"],
                "recovered": end["accuracy"],
            },
        },
    )
