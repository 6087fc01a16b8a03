"""PyTorch student -> checked, simplified ONNX with a dynamic batch axis and named I/O."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from models import DR_GRADING, TaskSpec

INPUT_NAME = "images"


class ExportError(RuntimeError):
    """The model could not be exported; the message names the model or layer."""


class _TupleOutputs(nn.Module):
    """Wraps a model with dict outputs so the exporter sees a tuple in a fixed order."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[name] for name in self.names)


def task_of(model: nn.Module) -> TaskSpec:
    """The task a network answers (DR grading for a module that does not say)."""
    task = getattr(model, "task", DR_GRADING)
    return task if isinstance(task, TaskSpec) else DR_GRADING


def export_onnx(model: nn.Module, size: int, path: Path, *, opset: int = 17) -> Path:
    """Write ``model`` as ONNX: input ``images`` (N x C x size x size, C the task's input
    channels) and the task's named outputs (for DR: ``grade_logits``, ``gradable_logit``)."""
    model = model.eval()
    task = task_of(model)
    names = list(task.output_shapes())
    dummy = torch.zeros(2, task.input.channels, size, size)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *names)}
    wrapped = _TupleOutputs(model, names).eval()  # else the exporter restores train mode
    return trace_onnx(wrapped, (dummy,), path, [INPUT_NAME], names, axes, opset)


def trace_onnx(
    wrapped: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    axes: dict[str, dict[int, str]],
    opset: int = 17,
) -> Path:
    """Trace ``wrapped`` (positional tensors in, a tuple of tensors out) to ONNX at ``path``
    with named I/O and dynamic ``axes``, then simplify and check it."""
    model = getattr(wrapped, "model", wrapped)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                args,
                str(path),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as e:
        raise ExportError(f"{type(model).__name__} did not export to ONNX: {e}") from e
    simplify(path)
    check(path)
    return path


def simplify(path: Path) -> None:
    """Fold constants and drop redundant nodes (ONNX Runtime's portable, basic-level passes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    tmp = path.with_name(path.stem + ".simplified.onnx")
    opts.optimized_model_filepath = str(tmp)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    model = onnx.load(str(tmp))
    tmp.unlink()
    # keep the opset and I/O names the exporter wrote; drop ORT's optimisation metadata
    del model.metadata_props[:]
    onnx.save(model, str(path))


def check(path: Path) -> onnx.ModelProto:
    """Run onnx's checker and strict shape inference; a failure names the file."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        raise ExportError(f"{path}: not a valid ONNX model: {e}") from e
