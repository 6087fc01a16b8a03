"""Quantization-aware training: fake-quantised INT8 during the final distillation epochs.

Weights are quantised symmetrically per output channel, the input of every convolution and
linear layer symmetrically per tensor (zero-points all 0, as TensorRT wants). Training keeps
batch norm separate; the ONNX folds it into the convolutions first, which per-channel
symmetric quantisation allows exactly (scaling a channel scales its quantisation step). The
result is a Q/DQ ONNX that ``fovea export`` takes as its INT8 model (``int8_source: qat``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.nets import FundusNet
from server.compress.recovery import distill_into, evaluate
from server.compress.steps import StepContext, StepResult, StepSettings, register_step

QAT_ONNX = "model.qat.onnx"
"""The file name ``fovea export`` looks for beside ``student.json`` (``int8_source: qat``)."""
_QMIN, _QMAX = -128, 127


class ActivationQuant(nn.Module):
    """Symmetric per-tensor fake quantisation; the range is a running mean of max |x|."""

    amax: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("amax", torch.zeros(()))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rounded to its INT8 grid (straight-through gradient)."""
        if self.training:
            with torch.no_grad():
                now = x.detach().abs().max().float()
                fresh = self.amax <= 0
                self.amax.copy_(torch.where(fresh, now, self.amax.lerp(now, self.momentum)))
        scale = (self.amax / _QMAX).clamp(min=1e-8).reshape(())
        return torch.fake_quantize_per_tensor_affine(x, scale, self.zero_point, _QMIN, _QMAX)


def quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` on a symmetric INT8 grid per output channel (straight-through gradient)."""
    amax = w.detach().abs().flatten(1).amax(1).clamp(min=1e-8)
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, amax / _QMAX, zero, 0, _QMIN, _QMAX)


class QuantLayer(nn.Module):
    """A convolution or linear layer with fake-quantised input and weights."""

    def __init__(self, inner: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        self.inner = inner
        self.act = ActivationQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on quantised input with quantised weights."""
        x = self.act(x)
        w = quantize_weight(self.inner.weight)
        if isinstance(self.inner, nn.Linear):
            return nn.functional.linear(x, w, self.inner.bias)
        c = self.inner
        return nn.functional.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)


def _swap(model: nn.Module, wrap: bool) -> None:
    for name, child in model.named_children():
        if wrap and isinstance(child, nn.Conv2d | nn.Linear):
            setattr(model, name, QuantLayer(child))
        elif not wrap and isinstance(child, QuantLayer):
            setattr(model, name, child.inner)
        else:
            _swap(child, wrap)


def prepare_qat_(model: FundusNet) -> FundusNet:
    """Wrap every convolution and linear layer of ``model`` in fake quantisation, in place."""
    _swap(model, True)
    return model


def strip_qat_(model: FundusNet) -> FundusNet:
    """Undo :func:`prepare_qat_`: the float model with the weights QAT trained, in place."""
    _swap(model, False)
    return model


def _fold_batch_norms_(module: nn.Module) -> None:
    for child in module.children():
        _fold_batch_norms_(child)
    if not isinstance(module, nn.Sequential):
        return
    layers = list(module)
    for i in range(len(layers) - 1):
        a, b = layers[i], layers[i + 1]
        if (
            isinstance(a, QuantLayer)
            and isinstance(a.inner, nn.Conv2d)
            and isinstance(b, nn.BatchNorm2d)
        ):
            a.inner = fuse_conv_bn_eval(a.inner.eval(), b.eval())
            module[i + 1] = nn.Identity()


def export_qat_onnx(model: FundusNet, size: int, path: Path, *, opset: int = 17) -> Path:
    """Write a QAT-prepared ``model`` as Q/DQ ONNX (batch norm folded, zero-points 0)."""
    from server.export import export_onnx

    folded = copy.deepcopy(model).cpu().eval()
    _fold_batch_norms_(folded)
    return export_onnx(folded, size, path, opset=opset)


class QatSettings(StepSettings):
    """Settings of ``qat``: the final distillation epochs, with fake quantisation."""

    epochs: int = Field(2, ge=1)
    lr_scale: float = Field(0.1, gt=0, le=1)
    """Learning rate as a share of the run's ``distill.train.lr`` (fine-tuning)."""
    teacher: Literal["original", "previous"] = "original"
    opset: int = Field(17, ge=13, le=17)


@register_step("qat", QatSettings)
def qat_step(model: FundusNet, context: StepContext, settings: QatSettings) -> StepResult:
    """Fine-tune ``model`` with fake INT8 quantisation and write ``model.qat.onnx``."""
    from server.export import predict_onnx, score, session

    teacher = copy.deepcopy(model).eval() if settings.teacher == "previous" else context.teacher
    float_metrics = evaluate(model, context)
    prepare_qat_(model)
    lr = context.distill.train.lr * settings.lr_scale
    fit = distill_into(model, teacher, context, epochs=settings.epochs, lr=lr, subdir="qat")
    quantised = evaluate(fit.student, context)
    path = export_qat_onnx(
        fit.student, context.data.spec.size, context.out_dir / QAT_ONNX, opset=settings.opset
    )
    val, spec = context.data.val, context.data.spec
    onnx_val = score(predict_onnx(session(path), val, spec, 0.5, fit.student.task))
    strip_qat_(fit.student)
    context.log(
        f"qat: val accuracy {float_metrics['accuracy']:.3f} (float, before) -> "
        f"{quantised['accuracy']:.3f} (fake INT8), ONNX Q/DQ {onnx_val['accuracy'] / 100:.3f}"
    )
    return StepResult(
        model=fit.student,
        metrics=quantised,
        details={
            "float_before": float_metrics,
            "fake_int8": quantised,
            "onnx_int8_val_accuracy": onnx_val["accuracy"] / 100,
        },
        artifacts={"qat_onnx": path},
    )
