"""Progressive layer reduction: drop one block at a time, distilling from the previous model.

A CNN stage keeps its first block (it changes width and resolution); any later block of a stage
may go. A ViT (Fovea's, timm's, a Hugging Face image ViT) may lose any encoder block but one.
The smaller model starts from the larger one's remaining weights. Each removal is chosen as the
block whose absence hurts validation accuracy least before retraining; reduction stops at the
target size, at ``min_depth``, or when accuracy after recovery falls below ``min_retention`` of
the reference (that last model is then discarded).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
from pydantic import Field
from torch import nn

from models.nets import FundusNet, SourceNet, StagedNet, ViT, count_parameters
from server.compress.measure import curve_point
from server.compress.recovery import distill_into, evaluate
from server.compress.steps import StepContext, StepResult, StepSettings, register_step
from server.training import TrainingData, point_metrics, predict

Block = tuple[int, int]
"""(stage index, block index) for CNNs; (0, block index) for a ViT."""


class ReduceLayersSettings(StepSettings):
    """Settings of ``reduce_layers``."""

    target_parameters: int | None = Field(None, ge=1)
    """Stop once the model has at most this many parameters."""
    target_fraction: float | None = Field(None, gt=0, le=1)
    """... or at most this fraction of the teacher's parameters."""
    max_removals: int | None = Field(None, ge=1)
    min_depth: int = Field(1, ge=1)
    """Blocks a ViT keeps at least (a CNN stage always keeps one)."""
    min_retention: float = Field(0.97, gt=0, le=1)
    """Accuracy after recovery / reference accuracy below this stops the reduction."""
    reference: Literal["input", "teacher"] = "input"
    """Retention is measured against the step's input model or the run's teacher."""
    teacher: Literal["previous", "original"] = "previous"
    """Each recovery distills from the model before the removal, or from the run's teacher."""
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    choice_images: int = Field(512, ge=16)
    """Validation images used to choose which block to drop."""
    latency_runs: int = Field(20, ge=0)


def removable_blocks(model: FundusNet, min_depth: int = 1) -> list[Block]:
    """The blocks that may be dropped without changing any other layer's shape."""
    if isinstance(model, StagedNet):
        depths = [len(list(stage.children())) for stage in model.stages]
        return [(s, b) for s, depth in enumerate(depths) for b in range(1, depth)]
    blocks = model.transformer_blocks() if isinstance(model, SourceNet) else None
    blocks = model.blocks if isinstance(model, ViT) else blocks
    if blocks is not None:
        return [(0, b) for b in range(len(blocks))] if len(blocks) > min_depth else []
    raise ValueError(f"layer reduction does not know the {model.family!r} family")


def without_block(model: FundusNet, block: Block) -> FundusNet:
    """A copy of ``model`` with ``block`` removed and its config updated to match."""
    smaller = copy.deepcopy(model)
    stage, index = block
    if isinstance(smaller, StagedNet):
        container: nn.Sequential | nn.ModuleList = smaller.stages[stage]  # type: ignore[assignment]
        del container[index]
        smaller.config["depths"] = [len(s) for s in smaller.stages]  # type: ignore[arg-type]
    elif isinstance(smaller, ViT):
        del smaller.blocks[index]
        smaller.config["depth"] = len(smaller.blocks)
        if isinstance(smaller.config.get("heads"), list):
            heads = list(smaller.config["heads"])
            del heads[index]
            smaller.config["heads"] = heads
    elif isinstance(smaller, SourceNet):
        smaller.remove_block_(index)
    return smaller


def _probe(data: TrainingData, n: int) -> TrainingData:
    val = data.val
    if len(val) > n:
        keep = np.sort(np.random.default_rng(0).choice(len(val), n, replace=False))
        val = val.subset(keep)
    return TrainingData(data.spec, data.train, val)


def choose_block(model: FundusNet, data: TrainingData, candidates: list[Block]) -> Block:
    """The candidate whose removal leaves the highest validation accuracy (before retraining)."""
    scores = []
    for block in candidates:
        trial = without_block(model, block)
        scores.append(point_metrics(predict(trial, data.val, data.spec))["accuracy"])
    return candidates[int(np.nanargmax(np.nan_to_num(scores, nan=-1.0)))]


def _target(settings: ReduceLayersSettings, context: StepContext) -> int | None:
    targets = []
    if settings.target_parameters:
        targets.append(settings.target_parameters)
    if settings.target_fraction and context.teacher_parameters:
        targets.append(int(settings.target_fraction * context.teacher_parameters))
    return min(targets) if targets else None


@register_step("reduce_layers", ReduceLayersSettings)
def reduce_layers(
    model: FundusNet, context: StepContext, settings: ReduceLayersSettings
) -> StepResult:
    """Remove blocks one at a time, each followed by distillation from the previous model."""
    size = context.data.spec.size
    current = model
    metrics = evaluate(current, context)
    reference = metrics
    if settings.reference == "teacher" and context.teacher is not None:
        reference = evaluate(context.teacher, context)
    target = _target(settings, context)
    curve = [curve_point("input", current, metrics, size, settings.latency_runs)]
    removed: list[dict[str, Any]] = []
    probe = _probe(context.data, settings.choice_images)
    while target is None or count_parameters(current) > target:
        if settings.max_removals is not None and len(removed) >= settings.max_removals:
            break
        candidates = removable_blocks(current, settings.min_depth)
        if not candidates:
            context.log("reduce_layers: no block left to remove")
            break
        block = choose_block(current, probe, candidates)
        smaller = without_block(current, block)
        teacher = copy.deepcopy(current).eval() if settings.teacher == "previous" else None
        teacher = teacher or context.teacher
        label = f"-{_name(current, block)}"
        context.log(
            f"reduce_layers: removing {label[1:]} "
            f"({count_parameters(current):,} -> {count_parameters(smaller):,} parameters)"
        )
        fit = distill_into(
            smaller,
            teacher,
            context,
            epochs=settings.epochs,
            lr=settings.lr,
            subdir=f"removal{len(removed) + 1}",
        )
        after = evaluate(fit.student, context)
        retention = after["accuracy"] / max(reference["accuracy"], 1e-9)
        point = curve_point(label, fit.student, after, size, settings.latency_runs)
        accepted = retention >= settings.min_retention
        point["retention"] = retention
        point["accepted"] = int(accepted)
        curve.append(point)
        removed.append({"block": label[1:], "retention": retention, "accepted": accepted})
        if not accepted:
            context.log(
                f"reduce_layers: retention {retention:.3f} < {settings.min_retention}; "
                "keeping the previous model"
            )
            break
        current, metrics = fit.student, after
    return StepResult(
        model=current,
        metrics=metrics,
        details={"removed": removed, "target_parameters": target},
        curve=curve,
    )


def _name(model: FundusNet, block: Block) -> str:
    stage, index = block
    if isinstance(model, ViT | SourceNet):
        return f"block{index + 1}"
    return f"stage{stage + 1}.block{index + 1}"
