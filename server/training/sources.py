"""A model reference made into a network: built from its source, pretrained weights loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models import TaskSpec
from models.nets import FundusNet, build_model, load_weights_
from server.training.config import ModelRef


def build_ref(
    ref: ModelRef, task: TaskSpec, log: Callable[[str], None] = lambda s: None
) -> FundusNet:
    """The network ``ref`` names, answering ``task`` (its head sized for the task's outputs),
    with its ``weights`` loaded (what did not fit is logged)."""
    model = build_model(ref.name, ref.config).for_task_(task)
    if ref.weights is not None:
        report = load_weights_(model, ref.weights)
        log(f"{ref.name}: {report.describe()}")
    return model


def ref_file(ref: ModelRef) -> Path | None:
    """The file that holds ``ref``'s weights (its weights file, or the ONNX model), if any."""
    if ref.weights is not None:
        return ref.weights
    if ref.kind == "onnx":
        return Path(ref.name.partition(":")[2])
    return None
