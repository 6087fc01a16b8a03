"""Any ``nn.Module`` with named tensor inputs (token ids and masks included) to ONNX, with its
outputs checked against PyTorch's in ONNX Runtime.

The image export (:func:`~server.export.onnx_export.export_onnx`) writes Fovea's fixed
``images`` -> ``grade_logits`` / ``gradable_logit`` signature; this one takes the model's own:
a tensor input is ``input``, a dict's keys name the inputs (``input_ids``, ``attention_mask``),
and a dict output (a Hugging Face ``ModelOutput`` included) names the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from server.export.onnx_export import ExportError, trace_onnx
from server.export.parity import Parity
from server.export.scoring import session

TENSOR_INPUT = "input"
TENSOR_OUTPUT = "output"


class _Positional(nn.Module):
    """The model called with named inputs, its chosen outputs as a tuple (what the exporter
    traces)."""

    def __init__(self, model: nn.Module, inputs: list[str] | None, outputs: list[str]) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs
        self.outputs = outputs

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = (
            self.model(args[0])
            if self.inputs is None
            else self.model(**dict(zip(self.inputs, args, strict=True)))
        )
        if isinstance(out, torch.Tensor):
            return (out,)
        if isinstance(out, Mapping):
            return tuple(out[name] for name in self.outputs)
        return tuple(out[int(name.rpartition("_")[2])] for name in self.outputs)


def _output_names(out: Any, wanted: Sequence[str] | None) -> list[str]:
    if isinstance(out, torch.Tensor):
        return [TENSOR_OUTPUT]
    if isinstance(out, Mapping):
        names = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
    elif isinstance(out, tuple | list):
        names = [f"{TENSOR_OUTPUT}_{i}" for i, v in enumerate(out) if isinstance(v, torch.Tensor)]
    else:
        raise ExportError(f"the model returned {type(out).__name__}, not tensors")
    if wanted is None:
        return names
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ExportError(f"outputs {missing} are not among the model's outputs {names}")
    return list(wanted)


def _default_axes(example: dict[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    """Dynamic batch for every input; dynamic sequence for integer (token) inputs N x L."""
    axes: dict[str, dict[int, str]] = {}
    for name, t in example.items():
        axes[name] = {0: "batch"}
        if t.ndim >= 2 and not t.is_floating_point():
            axes[name][1] = "sequence"
    return axes


@dataclass(frozen=True)
class ModuleExport:
    """What :func:`export_module_onnx` wrote and how closely ONNX Runtime reproduces PyTorch."""

    path: Path
    inputs: list[str]
    outputs: list[str]
    parity: Parity


def export_module_onnx(
    model: nn.Module,
    example: torch.Tensor | Mapping[str, torch.Tensor],
    path: Path | str,
    *,
    outputs: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    tolerance: float = 1e-4,
    opset: int = 17,
) -> ModuleExport:
    """Write ``model`` as ONNX at ``path`` (traced on ``example``) and check it in ONNX Runtime.

    Inputs keep the dict's names (a tensor is ``input``); outputs are ``outputs`` or every
    tensor the model returns. Every input's first axis is dynamic, and so is the second of
    integer inputs (token ids, masks) unless ``dynamic_axes`` says otherwise; outputs get the
    dynamic batch, and the sequence axis where they have one. Parity is the largest absolute
    difference from PyTorch on ``example`` (``.parity.passed`` within ``tolerance``).
    """
    path = Path(path)
    model = model.eval()
    tensor_input = isinstance(example, torch.Tensor)
    named = {TENSOR_INPUT: example} if isinstance(example, torch.Tensor) else dict(example)
    with torch.no_grad():
        raw = model(example) if tensor_input else model(**named)
        names = _output_names(raw, outputs)
        wrapped = _Positional(model, None if tensor_input else list(named), names).eval()
        expected = [t.float().numpy() for t in wrapped(*named.values())]
    axes = {k: dict(v) for k, v in (dynamic_axes or _default_axes(named)).items()}
    sequences = {t.shape[1] for k, t in named.items() if 1 in axes.get(k, {}) and t.ndim >= 2}
    for name, value in zip(names, expected, strict=True):
        axes[name] = {0: "batch"}
        if value.ndim >= 3 and value.shape[1] in sequences:
            axes[name][1] = "sequence"
    trace_onnx(wrapped, tuple(named.values()), path, list(named), names, axes, opset)
    feeds = {k: v.numpy() for k, v in named.items()}
    got = session(path).run(names, feeds)
    errors = {
        n: float(np.abs(np.asarray(g, np.float32) - e).max())
        for n, g, e in zip(names, got, expected, strict=True)
    }
    worst = max(errors, key=lambda k: errors[k])
    return ModuleExport(path, list(named), names, Parity(errors[worst], worst, tolerance))
