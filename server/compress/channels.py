"""Structured channel pruning of CNN students by filter L1 norm, then distillation to recover.

torch-pruning's dependency graph keeps coupled channels together (a residual add's inputs, a
depthwise convolution and its neighbours), so the pruned model is physically smaller and its
checkpoint records that its widths come from the weights.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from models.nets import FundusNet, SourceNet, StagedNet, count_parameters
from server.compress.measure import curve_point
from server.compress.recovery import distill_into, evaluate
from server.compress.steps import StepContext, StepResult, StepSettings, register_step


class PruneChannelsSettings(StepSettings):
    """Settings of ``prune_channels``: how much, in how many rounds, and how to recover."""

    ratio: float | None = Field(None, gt=0, lt=1)
    """Share of each layer's channels removed in all (spread over ``rounds``)."""
    target_parameters: int | None = Field(None, ge=1)
    target_fraction: float | None = Field(None, gt=0, lt=1)
    """... or prune until at most this fraction of the teacher's parameters remains."""
    rounds: int = Field(1, ge=1)
    """Prune-then-distill rounds; each removes an equal share of what is left to remove."""
    min_retention: float | None = Field(None, gt=0, le=1)
    """Stop (keeping the previous round's model) when accuracy falls below this share of the
    step's input model."""
    teacher: Literal["previous", "original"] = "original"
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    round_to: int | None = Field(None, ge=1)
    """Keep channel counts multiples of this (tensor cores like 8)."""
    latency_runs: int = Field(20, ge=0)

    @model_validator(mode="after")
    def _one_amount(self) -> PruneChannelsSettings:
        given = [self.ratio, self.target_parameters, self.target_fraction]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of ratio, target_parameters, target_fraction")
        return self


def prune_channels_(
    model: FundusNet, ratio: float, size: int, *, round_to: int | None = None
) -> FundusNet:
    """Remove ``ratio`` of the channels of every prunable layer by filter L1 norm, in place.

    The output head keeps its shape; convolutions coupled through residual adds lose the same
    channels.
    """
    import torch_pruning as tp

    if not is_cnn(model):
        raise ValueError(
            f"channel pruning is for CNN students; {model.family!r} is not one "
            "(prune a ViT's attention heads with prune_heads)"
        )
    was = model.training
    model.eval()
    channels = model.task.input.channels
    example = torch.zeros(1, channels, size, size, device=next(model.parameters()).device)
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer=None),
        pruning_ratio=ratio,
        ignored_layers=[model.head],
        round_to=round_to,
    )
    pruner.step()
    model.train(was)
    model.embed_dim = model.head.in_features
    return model


def is_cnn(model: FundusNet) -> bool:
    """Whether ``model`` is a CNN torch-pruning can slice: a Fovea CNN family, or a backbone
    from elsewhere (``module:``, ``timm:``, ``torchvision:``, ``hf:``) with convolutions and no
    attention."""
    if isinstance(model, StagedNet):
        return True
    if not isinstance(model, SourceNet):
        return False
    kinds = [type(m).__name__.lower() for m in model.backbone.modules()]
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.backbone.modules())
    return has_conv and not any("attention" in k or "attn" in k for k in kinds)


def _ratio_for(model: FundusNet, target: int, size: int, round_to: int | None) -> float:
    """The smallest uniform ratio that brings ``model`` to at most ``target`` parameters."""
    lo, hi = 0.0, 0.95
    for _ in range(8):
        mid = (lo + hi) / 2
        n = count_parameters(prune_channels_(copy.deepcopy(model), mid, size, round_to=round_to))
        lo, hi = (mid, hi) if n > target else (lo, mid)
    return hi


def _target(settings: PruneChannelsSettings, context: StepContext) -> int | None:
    if settings.target_parameters:
        return settings.target_parameters
    if settings.target_fraction:
        if not context.teacher_parameters:
            raise ValueError("prune_channels.target_fraction needs a run with a teacher")
        return int(settings.target_fraction * context.teacher_parameters)
    return None


@register_step("prune_channels", PruneChannelsSettings)
def prune_channels(
    model: FundusNet, context: StepContext, settings: PruneChannelsSettings
) -> StepResult:
    """Prune in ``rounds`` equal shares, distilling after each to recover."""
    size = context.data.spec.size
    metrics = evaluate(model, context)
    reference = metrics["accuracy"]
    target = _target(settings, context)
    start = count_parameters(model)
    goal = target if target is not None else None
    curve = [curve_point("input", model, metrics, size, settings.latency_runs)]
    rounds: list[dict[str, Any]] = []
    current = model
    for r in range(settings.rounds):
        left = settings.rounds - r
        if goal is not None:
            # equal shares of the remaining reduction, geometric in parameter count
            want = int(count_parameters(current) * (goal / count_parameters(current)) ** (1 / left))
            if count_parameters(current) <= goal:
                break
            ratio = _ratio_for(current, max(want, goal), size, settings.round_to)
        else:
            assert settings.ratio is not None
            keep = (1 - settings.ratio) ** (1 / settings.rounds)
            ratio = 1 - keep
        teacher = copy.deepcopy(current).eval() if settings.teacher == "previous" else None
        teacher = teacher or context.teacher
        pruned = prune_channels_(copy.deepcopy(current), ratio, size, round_to=settings.round_to)
        context.log(
            f"prune_channels: round {r + 1}/{settings.rounds}, ratio {ratio:.3f}, "
            f"{count_parameters(current):,} -> {count_parameters(pruned):,} parameters"
        )
        fit = distill_into(
            pruned, teacher, context, epochs=settings.epochs, lr=settings.lr, subdir=f"round{r + 1}"
        )
        after = evaluate(fit.student, context)
        retention = after["accuracy"] / max(reference, 1e-9)
        point = curve_point(f"prune{r + 1}", fit.student, after, size, settings.latency_runs)
        point["retention"] = retention
        curve.append(point)
        rounds.append(
            {"ratio": ratio, "parameters": count_parameters(fit.student), "retention": retention}
        )
        if settings.min_retention is not None and retention < settings.min_retention:
            context.log(
                f"prune_channels: retention {retention:.3f} < {settings.min_retention}; "
                "keeping the previous model"
            )
            rounds[-1]["accepted"] = False
            break
        current, metrics = fit.student, after
    context.log(f"prune_channels: {start:,} -> {count_parameters(current):,} parameters")
    return StepResult(
        model=current, metrics=metrics, details={"rounds": rounds, "target": target}, curve=curve
    )
