"""INT8 activation ranges: as JSON, and as a TensorRT calibration cache in its text format."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

QMAX = 127
DEFAULT_TRT_VERSION = "8.5.2"


def activation_scales(qdq: onnx.ModelProto) -> dict[str, float]:
    """Per-tensor scale of each activation a symmetric Q/DQ model quantizes (not weights)."""
    inits = {i.name: i for i in qdq.graph.initializer}
    scales: dict[str, float] = {}
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        if scale.size == 1:
            scales[node.input[0]] = float(scale.reshape(()))
    return scales


def calibrated_scales(ort_cache: Path) -> dict[str, float]:
    """Symmetric scale (max |range| / 127) of every tensor ONNX Runtime calibrated.

    TensorRT's implicit INT8 needs a range for each activation, not only for the inputs of the
    layers a Q/DQ model quantizes, so the cache is written from the full calibration; a tensor
    that was always 0 keeps scale 0 (TensorRT's own caches list such tensors as ``: 0``).
    """
    from onnxruntime.quantization.calibrate import load_tensors_data

    scales = {}
    for name, data in load_tensors_data(ort_cache).data.items():
        lo, hi = data.range_value
        amax = max(abs(float(np.asarray(lo).max())), abs(float(np.asarray(hi).max())))
        scales[name] = amax / QMAX
    return scales


def trt_header(version: str = DEFAULT_TRT_VERSION) -> str:
    """The cache's first line, ``TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2``.

    TensorRT writes its version number there: major*1000 + minor*100 + patch before 10
    (8.5.2 -> ``TRT-8502``), major*10000 + minor*100 + patch from 10 on (10.3.0 ->
    ``TRT-100300``; ``NV_TENSORRT_VERSION_INT`` in TensorRT 10's ``NvInferRuntimeBase.h``).
    """
    try:
        major, minor, patch = (int(p) for p in version.split(".")[:3])
    except ValueError:
        raise ValueError(f"TensorRT version must be MAJOR.MINOR.PATCH, got {version!r}") from None
    number = major * (10000 if major >= 10 else 1000) + minor * 100 + patch
    return f"TRT-{number}-EntropyCalibration2"


def scale_hex(scale: float) -> str:
    """The big-endian float32 bits of ``scale`` as 8 lower-case hex digits."""
    return struct.pack(">f", np.float32(scale)).hex()


def write_ranges(
    scales: dict[str, float],
    json_path: Path,
    cache_path: Path,
    trt_version: str = DEFAULT_TRT_VERSION,
) -> None:
    """``int8_ranges.json`` (scale and dynamic range = scale x 127) and the TensorRT cache."""
    ranges = {name: {"scale": s, "range": s * QMAX} for name, s in sorted(scales.items())}
    json_path.write_text(
        json.dumps(
            {"schema_version": 1, "symmetric": True, "qmax": QMAX, "tensors": ranges}, indent=2
        )
    )
    lines = [trt_header(trt_version)]
    lines += [f"{name}: {scale_hex(s)}" for name, s in sorted(scales.items())]
    cache_path.write_text("\n".join(lines) + "\n")


def read_cache(path: Path) -> tuple[str, dict[str, float]]:
    """(header, tensor -> scale) from a TensorRT text calibration cache."""
    header, *rows = path.read_text().splitlines()
    scales = {}
    for row in rows:
        name, _, hexval = row.rpartition(": ")
        scales[name] = float(struct.unpack(">f", bytes.fromhex(hexval))[0])
    return header, scales


_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16}


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """Every tensor TensorRT's implicit INT8 may quantize, so needs a range for: the float
    graph inputs and the float outputs of every node (not weights, not Constant outputs)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    infos = chain(graph.input, graph.value_info, graph.output)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in infos}
    weights = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in weights]
    for node in graph.node:
        if node.op_type != "Constant":
            names += [o for o in node.output if o]
    # a tensor whose type shape inference could not tell is counted: better a visible gap
    return list(dict.fromkeys(n for n in names if types.get(n, TensorProto.FLOAT) in _FLOAT_TYPES))


@dataclass(frozen=True)
class CacheCoverage:
    """Which of the activations of an ONNX file a calibration cache gives a range for."""

    needed: list[str]
    covered: list[str]
    missing: list[str]

    @property
    def complete(self) -> bool:
        """Whether every activation has a range (else TensorRT runs the rest in FP16/FP32)."""
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        """Counts and the missing names, for ``export.json``."""
        return {
            "needed": len(self.needed),
            "covered": len(self.covered),
            "complete": self.complete,
            "missing": self.missing,
        }


def cache_coverage(model: Path, cache: Path) -> CacheCoverage:
    """How much of ``model``'s activations (:func:`activation_tensors`, named exactly as in
    that file) the TensorRT calibration cache at ``cache`` covers."""
    needed = activation_tensors(onnx.load(str(model)))
    _, scales = read_cache(cache)
    return CacheCoverage(
        needed=needed,
        covered=[n for n in needed if n in scales],
        missing=[n for n in needed if n not in scales],
    )
