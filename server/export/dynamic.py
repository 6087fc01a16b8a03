"""Dynamic quantization: INT8 weights, activations quantized at run time (no calibration)."""

from __future__ import annotations

from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

from server.export.int8 import QUANTIZED_OPS, quiet


def quantize_dynamic_int8(src: Path, dst: Path) -> Path:
    """Write ``model.int8dyn.onnx``: per-channel symmetric int8 weights, runtime activations."""
    with quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    return dst
