"""Symmetric Q/DQ INT8 (ONNX Runtime quantize_static), calibrated and checked against a budget.

The calibration method is chosen by accuracy on a selection split; when INT8 still loses more
than the budget, the most sensitive layers (each measured quantized alone) stay in float, one
more at a time, until it fits.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

from models import DR_GRADING, PreprocessSpec, TaskSpec
from models.datasets import FundusArrays
from server.export.onnx_export import INPUT_NAME
from server.export.scoring import predict_onnx, run_outputs, score, session

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
"""The op types the Q/DQ model quantizes. Calibration records every float activation, whatever
its op (see :func:`calibrate_ranges`): TensorRT's implicit INT8 needs a range for each."""
METHODS = {
    "MinMax": CalibrationMethod.MinMax,
    "Entropy": CalibrationMethod.Entropy,
    "Percentile": CalibrationMethod.Percentile,
}
Log = Callable[[str], None]


class CalibrationError(ValueError):
    """A calibration set that cannot be used; the message names its source."""


CALIBRATION_PIXELS = 16 * 128 * 128
"""Pixels per calibration step: 16 images at 128 px, fewer at clinical sizes. ONNX Runtime's
calibrators keep every calibrated tensor of a step in memory (every activation: a few hundred MB
per 384-px image for a MobileNetV3-Large), so calibration runs one step at a time and merges the
ranges."""


def calibration_batch(x: np.ndarray, pixels: int = CALIBRATION_PIXELS) -> int:
    """Images per calibration step for N x C x H x W inputs ``x``: at most 16, at least 1."""
    return max(1, min(16, pixels // max(1, x.shape[-1] * x.shape[-2]), len(x)))


class CalibrationReader(CalibrationDataReader):
    """Feeds normalised images to ONNX Runtime's calibrators in small batches.

    ``len()`` and ``set_range`` (in batches) let ``quantize_static`` collect one step at a time
    (its ``CalibStridedMinMax`` option), so memory stays at one step's activations.
    """

    def __init__(self, x: np.ndarray, batch_size: int | None = None) -> None:
        # equal batches only: ONNX Runtime's histogram calibrators stack every batch's values
        # of a tensor into one array, which fails on a shorter last batch; the tail is dropped
        batch_size = min(batch_size or calibration_batch(x), len(x))
        whole = len(x) - len(x) % batch_size
        self._all = [x[i : i + batch_size] for i in range(0, whole, batch_size)]
        self._batches = iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Give batches ``start_index`` to ``end_index`` (exclusive) next."""
        self._batches = iter(self._all[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as ONNX Runtime's input feed; ``None`` when all were given."""
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def check_calibration(
    x: np.ndarray, size: int, minimum: int, source: str, channels: int = 3
) -> None:
    """Raise :class:`CalibrationError` when ``x`` is not enough N x C x size x size floats."""
    if x.ndim != 4 or x.shape[1:] != (channels, size, size):
        raise CalibrationError(
            f"calibration images from {source} have shape {tuple(x.shape[1:])} after "
            f"preprocessing; the model expects ({channels}, {size}, {size})"
        )
    if len(x) < minimum:
        raise CalibrationError(
            f"calibration set from {source} has {len(x)} images; at least {minimum} are needed "
            "(lower calibration.min_calibration only for tests)"
        )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence ONNX Runtime's quantization chatter (root-logger warnings, calibration prints)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def calibrate_ranges(src: Path, calib: np.ndarray, method: str, cache: Path) -> Path:
    """ONNX Runtime's ranges of every float activation of ``src`` (graph inputs and the outputs
    of every op, not only :data:`QUANTIZED_OPS`), one calibration step at a time, written as
    ONNX Runtime's JSON calibration cache at ``cache`` (which ``quantize_static`` then reads)."""
    reader = CalibrationReader(calib)
    with quiet(), tempfile.TemporaryDirectory(prefix="fovea-calib-") as tmp:
        calibrator = create_calibrator(
            src,
            None,  # no op types: every float tensor (ONNX Runtime's default)
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[method],
        )
        for start in range(len(reader)):
            reader.set_range(start_index=start, end_index=start + 1)
            calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def quantize_qdq(
    src: Path,
    dst: Path,
    calib: np.ndarray,
    method: str,
    *,
    exclude: list[str] | None = None,
    cache: Path | None = None,
) -> Path:
    """Symmetric INT8 Q/DQ: zero-points 0, per-channel QInt8 weights, int8 activations.

    ``cache``: ONNX Runtime's ranges (JSON), calibrated by :func:`calibrate_ranges` when missing.
    """
    with tempfile.TemporaryDirectory(prefix="fovea-q-") as tmp:
        ranges = cache if cache is not None else Path(tmp) / "ranges.json"
        if not ranges.is_file():
            calibrate_ranges(src, calib, method, ranges)
        with quiet():
            _quantize_qdq(src, dst, method, exclude, ranges)
    return dst


def _quantize_qdq(
    src: Path, dst: Path, method: str, exclude: list[str] | None, ranges: Path
) -> None:
    quantize_static(
        str(src),
        str(dst),
        None,  # the ranges come from the cache
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_exclude=exclude or [],
        calibrate_method=METHODS[method],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        calibration_cache_path=ranges,
    )


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the nodes INT8 quantization touches, in graph order."""
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in QUANTIZED_OPS]


@dataclass(frozen=True)
class SelectionSet:
    """Held-out images (not calibration, not the reported split) to choose settings on."""

    arrays: FundusArrays
    spec: PreprocessSpec
    referral_threshold: float
    task: TaskSpec = DR_GRADING

    def accuracy(self, path: Path) -> float:
        """Accuracy (points) of the ONNX model at ``path`` on this set."""
        p = predict_onnx(
            session(path, 1), self.arrays, self.spec, self.referral_threshold, self.task
        )
        return score(p)["accuracy"]


@dataclass
class Int8Result:
    """The chosen INT8 model and how it was chosen."""

    path: Path
    method: str
    fp32_accuracy: float
    accuracy: float
    budget: float
    by_method: dict[str, float] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    ranges: Path | None = None
    """ONNX Runtime's calibration ranges (JSON) for the chosen method."""

    @property
    def within_budget(self) -> bool:
        """Whether INT8 loses at most ``budget`` points on the selection set."""
        return self.fp32_accuracy - self.accuracy <= self.budget + 1e-9


def layer_sensitivity(
    src: Path, work: Path, calib: np.ndarray, method: str, sample: np.ndarray, cache: Path
) -> dict[str, float]:
    """Mean |logit change| when each layer alone is quantized, largest first."""
    ref = run_outputs(session(src, 1), sample)
    nodes = quantizable_nodes(src)
    out: dict[str, float] = {}
    for node in nodes:
        dst = work / "one-layer.onnx"
        quantize_qdq(src, dst, calib, method, exclude=[n for n in nodes if n != node], cache=cache)
        got = run_outputs(session(dst, 1), sample)
        out[node] = float(np.mean([np.abs(got[k] - ref[k]).mean() for k in ref]))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def quantize_int8(
    src: Path,
    dst: Path,
    calib: np.ndarray,
    select: SelectionSet,
    *,
    methods: list[str],
    budget: float,
    max_excluded: int,
    sensitivity_samples: int = 128,
    work: Path,
    log: Log = lambda s: None,
) -> Int8Result:
    """Calibrate with each method, keep the most accurate; fall back layer by layer if needed."""
    fp32 = select.accuracy(src)
    by_method: dict[str, float] = {}
    for method in methods:
        candidate = work / f"int8-{method}.onnx"
        quantize_qdq(src, candidate, calib, method, cache=work / f"ranges-{method}.json")
        by_method[method] = select.accuracy(candidate)
        log(f"INT8 {method}: {by_method[method]:.2f}% (fp32 {fp32:.2f}%)")
    method = max(by_method, key=lambda m: by_method[m])
    best = work / f"int8-{method}.onnx"
    result = Int8Result(dst, method, fp32, by_method[method], budget, by_method)
    result.ranges = work / f"ranges-{method}.json"
    if not result.within_budget and max_excluded > 0:
        cache = result.ranges
        sample = select.spec.normalise(select.arrays.images[:sensitivity_samples])
        result.sensitivity = layer_sensitivity(src, work, calib, method, sample, cache)
        ranked = list(result.sensitivity)
        for k in range(1, min(max_excluded, len(ranked)) + 1):
            candidate = work / f"int8-{method}-x{k}.onnx"
            quantize_qdq(src, candidate, calib, method, exclude=ranked[:k], cache=cache)
            acc = select.accuracy(candidate)
            log(f"INT8 {method} with {k} layer(s) in float: {acc:.2f}%")
            if acc > result.accuracy:
                best, result.accuracy, result.excluded = candidate, acc, ranked[:k]
            if result.within_budget:
                break
    best.replace(dst)
    return result
