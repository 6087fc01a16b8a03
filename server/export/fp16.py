"""fp16 ONNX with float32 inputs and outputs (onnxconverter-common), clamped weights named."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxconverter_common import float16

MIN_POSITIVE = 1e-7
MAX_FINITE = 1e4
"""onnxconverter-common's defaults: magnitudes outside [MIN_POSITIVE, MAX_FINITE] are clamped."""


@dataclass(frozen=True)
class Fp16Result:
    """The converted file and what the conversion had to change."""

    path: Path
    clamped: list[str] = field(default_factory=list)
    """One line per initializer with values clamped to fp16's usable range, naming it."""
    warnings: list[str] = field(default_factory=list)


def _clamped_initializers(model: onnx.ModelProto) -> list[str]:
    found = []
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        a = np.abs(numpy_helper.to_array(init))
        big = int((a >= MAX_FINITE).sum())
        tiny = int(((a > 0) & (a <= MIN_POSITIVE)).sum())
        if big or tiny:
            found.append(
                f"{init.name}: {big} value(s) >= {MAX_FINITE:g} and {tiny} nonzero value(s) "
                f"<= {MIN_POSITIVE:g} clamped"
            )
    return found


def convert_fp16(src: Path, dst: Path) -> Fp16Result:
    """Write ``src`` as fp16 to ``dst``, keeping float32 I/O and the ops that must stay fp32."""
    model = onnx.load(str(src))
    clamped = _clamped_initializers(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            model,
            min_positive_val=MIN_POSITIVE,
            max_finite_val=MAX_FINITE,
            keep_io_types=True,
        )
    onnx.checker.check_model(converted)
    onnx.save(converted, str(dst))
    messages = sorted({str(w.message) for w in caught})
    return Fp16Result(dst, clamped, messages)
