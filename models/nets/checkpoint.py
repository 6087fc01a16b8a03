"""Checkpoints: weights in safetensors beside a JSON that says how to rebuild the model.

Loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from models.nets.base import FundusNet, count_parameters
from models.nets.registry import build_model
from models.preprocess import PreprocessSpec
from models.sources import required_packages
from models.task import DR_GRADING, GRADE_NAMES, TaskSpec


class Ancestor(BaseModel):
    """One generation of a distillation lineage."""

    model_config = ConfigDict(extra="forbid")

    name: str
    family: str
    parameters: int
    metrics: dict[str, float] = Field(default_factory=dict)

    @field_validator("metrics", mode="before")
    @classmethod
    def _nan(cls, metrics: Any) -> Any:
        return _undefined(metrics)


def _undefined(metrics: Any) -> Any:
    """JSON writes an undefined metric (NaN: no referable case to measure) as null; read it back
    as NaN rather than refusing the checkpoint."""
    if isinstance(metrics, dict):
        return {k: float("nan") if v is None else v for k, v in metrics.items()}
    return metrics


class CheckpointMeta(BaseModel):
    """The JSON beside the weights."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    name: str
    family: str
    config: dict[str, Any]
    labels: list[str] = Field(default_factory=lambda: list(GRADE_NAMES))
    preprocess: PreprocessSpec
    parameters: int
    lineage: list[Ancestor] = Field(default_factory=list)
    """Teachers this model learned from, oldest first (empty for a model trained on labels)."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Headline validation metrics (point values; NaN where undefined)."""
    resized: bool = False
    """Layer widths come from the weights, not from ``config`` (a structurally pruned model)."""
    task: TaskSpec = DR_GRADING
    """The task the model answers (checkpoints written before task specs are DR grading)."""

    @field_validator("metrics", mode="before")
    @classmethod
    def _nan(cls, metrics: Any) -> Any:
        return _undefined(metrics)

    @model_validator(mode="after")
    def _labels_are_the_task_classes(self) -> CheckpointMeta:
        if tuple(self.labels) != self.task.classes:
            raise ValueError(
                f"labels {self.labels} are not task {self.task.name}'s classes "
                f"{list(self.task.classes)}"
            )
        return self

    @property
    def requires(self) -> tuple[str, ...]:
        """Python packages beyond Fovea's that rebuilding this model in torch needs."""
        return required_packages(self.family, self.config)

    def as_teacher(self) -> list[Ancestor]:
        """The lineage of a model distilled from this one: its ancestors, then itself."""
        me = Ancestor(
            name=self.name, family=self.family, parameters=self.parameters, metrics=self.metrics
        )
        return [*self.lineage, me]

    @property
    def generation(self) -> int:
        """0 for a model trained on labels, n for the n-th distillation."""
        return len(self.lineage)


def save_checkpoint(
    model: FundusNet,
    path: str | Path,
    *,
    name: str,
    preprocess: PreprocessSpec,
    lineage: list[Ancestor] | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write ``path`` (``.safetensors``) and its ``.json``; returns the JSON path."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta(
        resized=_differs_from_config(model),
        name=name,
        task=model.task,
        labels=list(model.task.classes),
        family=model.family,
        config=model.config,
        preprocess=preprocess,
        parameters=count_parameters(model),
        lineage=lineage or [],
        metrics=metrics or {},
    )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"fovea": "checkpoint"})
    tmp.replace(path)
    json_path = path.with_suffix(".json")
    json_path.write_text(meta.model_dump_json(indent=2))
    return json_path


def _differs_from_config(model: FundusNet) -> bool:
    fresh = build_model(model.family, model.config).for_task_(model.task).state_dict()
    return any(fresh[k].shape != v.shape for k, v in model.state_dict().items() if k in fresh)


def resize_to_state_(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter and buffer of ``model`` the shape it has in ``state``, in place.

    Convolution, batch-norm, linear and layer-norm attributes follow (a depthwise convolution
    stays depthwise), so a model pruned by slicing channels can be rebuilt from its weights.
    """
    for prefix, module in model.named_modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in tensors:
            key = f"{prefix}.{name}" if prefix else name
            if key in state and state[key].shape != tensor.shape:
                fresh = torch.empty(state[key].shape, dtype=tensor.dtype)
                if isinstance(tensor, nn.Parameter):
                    setattr(module, name, nn.Parameter(fresh, tensor.requires_grad))
                else:
                    module.register_buffer(name, fresh)
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
            module.out_channels = module.weight.shape[0]
            module.groups = module.out_channels if depthwise else module.groups
            module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.BatchNorm2d) and module.weight is not None:
            module.num_features = module.weight.shape[0]
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)


def read_meta(path: str | Path) -> CheckpointMeta:
    """The JSON half of a checkpoint (``.json`` or ``.safetensors`` path)."""
    json_path = Path(path).with_suffix(".json")
    if not json_path.is_file():
        raise FileNotFoundError(f"no checkpoint description at {json_path}")
    try:
        return CheckpointMeta.model_validate(json.loads(json_path.read_text()))
    except ValueError as e:
        raise ValueError(f"{json_path}: not a valid Fovea checkpoint description: {e}") from e


def load_checkpoint(path: str | Path) -> tuple[FundusNet, CheckpointMeta]:
    """Rebuild the model of a checkpoint and load its weights (in eval mode)."""
    meta = read_meta(path)
    weights = Path(path).with_suffix(".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"no weights at {weights}")
    return model_with_state(meta, load_file(str(weights)), str(weights)), meta


def model_with_state(
    meta: CheckpointMeta, state: dict[str, torch.Tensor], where: str = "weights"
) -> FundusNet:
    """The checkpoint's architecture, built for its task, holding ``state`` (in eval mode);
    a structurally pruned model (``meta.resized``) takes its layer widths from ``state``."""
    model = build_model(meta.family, meta.config).for_task_(meta.task)
    if meta.resized:
        resize_to_state_(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1:3]
        raise ValueError(
            f"{where}: weights do not fit {meta.family} {meta.config}: {' '.join(first)}"
        ) from None
    return model.eval()
