"""The TensorRT calibration cache an export writes, and how much of the fp32 graph it covers.

TensorRT 8.5 calibrates only where it must (INT8 on DLA) and then builds ``model.fp32.onnx``: every
activation of that graph needs a range, or TensorRT silently runs it in FP16/FP32. The coverage
goes into ``export.json`` so a gap is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_agent.runtime import CALIBRATION_CACHE
from server.export.calibration_cache import (
    activation_scales,
    cache_coverage,
    calibrated_scales,
    write_ranges,
)
from server.export.int8 import calibrate_ranges

Log = Callable[[str], None]


def write_cache(scales: dict[str, float], fp32: Path, out: Path, log: Log) -> dict[str, Any]:
    """``int8_ranges.json`` and the TensorRT cache in ``out``; their coverage of ``fp32``'s
    activations (:class:`~server.export.calibration_cache.CacheCoverage`), a gap logged."""
    cache = out / CALIBRATION_CACHE
    write_ranges(scales, out / "int8_ranges.json", cache)
    coverage = cache_coverage(fp32, cache)
    if not coverage.complete:
        log(
            f"INT8: {cache.name} has no range for {len(coverage.missing)} of "
            f"{len(coverage.needed)} activations of {fp32.name}; TensorRT runs them in FP16/FP32"
        )
    return coverage.as_dict()


def qat_cache(
    fp32: Path, qat: Path, calib: np.ndarray, method: str, work: Path, log: Log
) -> dict[str, Any]:
    """The cache for a QAT export, next to ``qat``: the QAT model's scales where its tensor
    names are the fp32 graph's (it is exported separately, BN-folded, so most are not) and
    ``method``'s calibrated ranges for the rest, so every activation of ``fp32`` has one."""
    scales = calibrated_scales(calibrate_ranges(fp32, calib, method, work / "ranges-qat.json"))
    trained = activation_scales(onnx.load(str(qat)))
    matched = {name: s for name, s in trained.items() if name in scales}
    scales.update(matched)
    log(f"INT8: {len(matched)} of {len(trained)} QAT scales name fp32 tensors; {method} the rest")
    return {
        **write_cache(scales, fp32, qat.parent, log),
        "qat_scales": len(trained),
        "qat_scales_used": len(matched),
        "calibrated_with": method,
    }
