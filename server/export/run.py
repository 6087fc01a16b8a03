"""``export(run_dir, out_dir, config)``: a distilled student to everything a device needs.

Everything is written into a temporary sibling directory and renamed into place at the end, so
an interrupted export never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from models import Predictions, PreprocessSpec, point_from_metrics, screening_metrics
from models.datasets import FundusArrays
from models.nets import CheckpointMeta, FundusNet, load_checkpoint
from server.distill import load_config
from server.export.calibration_cache import activation_scales, calibrated_scales
from server.export.compact import compact_names
from server.export.config import ExportConfig
from server.export.dynamic import quantize_dynamic_int8
from server.export.fp16 import convert_fp16
from server.export.int8 import SelectionSet, check_calibration, quantize_int8
from server.export.int8_cache import qat_cache, write_cache
from server.export.latency import onnx_speed
from server.export.lint import LintIssue, lint_for_tensorrt85
from server.export.onnx_export import ExportError, export_onnx
from server.export.parity import GOLDEN_FILE, check_parity, write_golden
from server.export.recipe import engine_recipe
from server.export.reference import write_reference
from server.export.report import EXPORT_FILE, SCHEMA_VERSION
from server.export.scoring import predict_onnx, score, session
from server.export.tensorrt import build_engines
from server.training import ConfigError, Splits, calibration_json, load_splits

Log = Callable[[str], None]
CHECKPOINT_DIR = "checkpoint"
"""Where the export keeps the model's own weights: ``checkpoint/model.{json,safetensors}``."""
QAT_FILE = "model.qat.onnx"
"""A run's quantisation-aware-trained Q/DQ model (``int8_source: qat``)."""


class ExportInputError(ValueError):
    """The run directory, checkpoint or data cannot be used; the message names the file."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it measured (the content of ``export.json``)."""

    out: Path
    report: dict[str, Any]


def _load_student(run_dir: Path) -> tuple[FundusNet, CheckpointMeta, Path]:
    ckpt = run_dir / "student.json"
    if not ckpt.is_file():
        raise ExportInputError(
            f"no student checkpoint at {ckpt}; is {run_dir} a `fovea distill` run directory?"
        )
    try:
        model, meta = load_checkpoint(ckpt)
    except Exception as e:  # safetensors raises its own types for a corrupt file
        raise ExportInputError(f"cannot load checkpoint {ckpt}: {e}") from None
    return model, meta, ckpt


def _load_data(run_dir: Path) -> Splits:
    path = run_dir / "config.yaml"
    try:
        cfg = load_config(path)
        return load_splits(cfg.data, cfg.seed)
    except (ConfigError, FileNotFoundError) as e:
        raise ExportInputError(f"{path}: cannot read the run's data: {e}") from None


def _sample(arrays: FundusArrays, n: int, seed: int) -> FundusArrays:
    if len(arrays) <= n:
        return arrays
    keep = np.sort(np.random.default_rng(seed).choice(len(arrays), n, replace=False))
    return arrays.subset(keep)


def _write_validation(arrays: FundusArrays, path: Path, budget: float, threshold: float) -> None:
    # the agent reads ``labels`` (any task) before ``grade``: a multilabel task's N x L findings
    extra = {} if arrays.labels is None else {"labels": arrays.labels.astype(np.int64)}
    np.savez_compressed(
        path,
        schema_version=np.int64(1),
        images=arrays.pixels(),
        grade=arrays.grade.astype(np.int64),
        gradable=arrays.gradable.astype(np.bool_),
        budget_points=np.float64(budget),
        referral_threshold=np.float64(threshold),
        **extra,  # type: ignore[arg-type]
    )


def _speed_note(name: str, fp32: dict[str, float], mine: dict[str, float]) -> str:
    ratio = mine["throughput_img_s"] / max(fp32["throughput_img_s"], 1e-9)
    if name != "fp32" and ratio < 1:
        return (
            f"{name} is {1 / ratio:.1f}x slower than fp32 in ONNX Runtime on this CPU; "
            "measure on the target before choosing it"
        )
    return ""


def _qat_int8(run_dir: Path, tmp: Path, log: Log) -> Path:
    """The run's quantisation-aware-trained Q/DQ model as ``model.int8.onnx``."""
    src = run_dir / QAT_FILE
    if not src.is_file():
        raise ExportInputError(
            f"int8_source is qat but {src} does not exist; end the `fovea compress` run with a "
            "qat step, or set int8_source: calibrate"
        )
    model = onnx.load(str(src))
    ops = {n.op_type for n in model.graph.node}
    if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
        raise ExportInputError(f"{src} has no QuantizeLinear/DequantizeLinear nodes: not Q/DQ")
    log(f"INT8: taking the quantisation-aware-trained {src}")
    dest = tmp / "model.int8.onnx"
    shutil.copyfile(src, dest)
    return dest


@dataclass(frozen=True)
class _Inputs:
    """What the export reads from the run: the student, its data and the samples it uses."""

    model: FundusNet
    meta: CheckpointMeta
    ckpt: Path
    splits: Splits
    threshold: float
    heldout_name: str
    heldout: FundusArrays
    calib: np.ndarray

    @property
    def spec(self) -> PreprocessSpec:
        """The student's preprocessing (its image size and normalisation)."""
        return self.meta.preprocess


def _read_inputs(run_dir: Path, config: ExportConfig) -> _Inputs:
    model, meta, ckpt = _load_student(run_dir)
    splits = _load_data(run_dir)
    spec = meta.preprocess
    threshold = float(meta.metrics.get("referral_threshold", 0.5))
    heldout_name = "test" if splits.test is not None else "val"
    heldout = splits.test if splits.test is not None else splits.val
    if config.heldout_limit:
        heldout = _sample(heldout, config.heldout_limit, config.seed)
    calib_arrays = _sample(splits.train, config.calibration_size, config.seed)
    if calib_arrays.size != spec.size:
        raise ExportInputError(
            f"calibration images in {run_dir / 'config.yaml'}'s data are {calib_arrays.size}px; "
            f"{ckpt} expects {spec.size}px"
        )
    calib = spec.normalise(calib_arrays.pixels())
    source = "the run's training split"
    check_calibration(calib, spec.size, config.min_calibration, source, spec.channels)
    return _Inputs(model, meta, ckpt, splits, threshold, heldout_name, heldout, calib)


def _export_fp32(
    inp: _Inputs, tmp: Path, config: ExportConfig, log: Log
) -> tuple[Path, list[LintIssue]]:
    """``model.fp32.onnx``, golden and validation samples, checked against PyTorch; lint notes."""
    spec = inp.spec
    fp32 = tmp / "model.fp32.onnx"
    log(f"exporting {inp.ckpt} to ONNX (opset {config.opset})")
    export_onnx(inp.model, spec.size, fp32, opset=config.opset)
    lint = lint_for_tensorrt85(onnx.load(str(fp32)))
    golden_in = spec.normalise(_sample(inp.heldout, config.golden_size, config.seed + 1).pixels())
    write_golden(inp.model, golden_in, tmp / GOLDEN_FILE)
    _write_validation(
        _sample(inp.heldout, config.validation_size, config.seed + 2),
        tmp / "validation.npz",
        config.budget,
        inp.threshold,
    )
    parity = check_parity(session(fp32), tmp / GOLDEN_FILE, config.tolerance("fp32"))
    if not parity.passed:
        raise ExportError(f"{fp32}: ONNX Runtime disagrees with PyTorch: {parity.describe()}")
    return fp32, lint


def _calibrated_int8(
    inp: _Inputs, fp32: Path, tmp: Path, work: Path, config: ExportConfig, log: Log
) -> tuple[Path, dict[str, Any]]:
    """``model.int8.onnx`` calibrated on the training sample, chosen on val; its ranges written."""
    log("INT8: calibrating " + ", ".join(config.calibration_methods))
    select = SelectionSet(inp.splits.val, inp.spec, inp.threshold, inp.meta.task)
    int8 = quantize_int8(
        fp32,
        tmp / "model.int8.onnx",
        inp.calib,
        select,
        methods=list(config.calibration_methods),
        budget=config.budget,
        max_excluded=config.max_excluded,
        sensitivity_samples=config.sensitivity_samples,
        work=work,
        log=log,
    )
    scales = calibrated_scales(int8.ranges) if int8.ranges else {}
    scales.update(activation_scales(onnx.load(str(int8.path))))
    return int8.path, {
        "calibration_cache": write_cache(scales, fp32, tmp, log),
        "method": int8.method,
        "by_method": int8.by_method,
        "selection_split": "val",
        "selection_fp32_accuracy": int8.fp32_accuracy,
        "selection_accuracy": int8.accuracy,
        "excluded": int8.excluded,
        "sensitivity": int8.sensitivity,
    }


def _reduced_precisions(
    inp: _Inputs, run_dir: Path, fp32: Path, tmp: Path, config: ExportConfig, log: Log
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Every precision's ONNX file (fp32 first) and what each conversion reported."""
    files = {"fp32": fp32}
    extra: dict[str, Any] = {}
    work = tmp / ".work"
    work.mkdir()
    if "fp16" in config.precisions:
        log("converting to fp16 (float32 inputs and outputs)")
        fp16 = convert_fp16(fp32, tmp / "model.fp16.onnx")
        files["fp16"] = fp16.path
        extra["fp16"] = {"clamped": fp16.clamped, "warnings": fp16.warnings}
    if "int8" in config.precisions and config.int8_source == "qat":
        files["int8"] = _qat_int8(run_dir, tmp, log)
        extra["int8"] = {
            "method": "qat",
            "source": str(run_dir / QAT_FILE),
            "calibration_cache": qat_cache(
                fp32, files["int8"], inp.calib, config.calibration_methods[0], work, log
            ),
        }
    elif "int8" in config.precisions:
        files["int8"], extra["int8"] = _calibrated_int8(inp, fp32, tmp, work, config, log)
    if "int8dyn" in config.precisions:
        log("dynamic quantization")
        files["int8dyn"] = quantize_dynamic_int8(fp32, tmp / "model.int8dyn.onnx")
    for name in ("int8", "int8dyn"):
        # after the ranges are read (they are keyed by the fp32 graph's tensor names)
        if name in files:
            compact_names(files[name])
    shutil.rmtree(work)
    return files, extra


def _measure(
    inp: _Inputs, files: dict[str, Path], tmp: Path, config: ExportConfig, log: Log
) -> dict[str, Any]:
    """Per precision: size, parity on the golden set, held-out scores, latency, against fp32."""
    precisions: dict[str, Any] = {}
    heldout_preds: Predictions | None = None
    for name, path in files.items():
        log(f"scoring {name} on {len(inp.heldout)} held-out images and timing it")
        sess = session(path)
        preds = predict_onnx(sess, inp.heldout, inp.spec, inp.threshold, inp.meta.task)
        scores = score(preds) | {"recall": _recall_points(preds)}
        if name == "fp32":
            heldout_preds = preds
        par = check_parity(sess, tmp / GOLDEN_FILE, config.tolerance(name))
        speed = onnx_speed(
            path,
            inp.spec.size,
            batch=config.throughput_batch,
            runs=config.latency_runs,
            threads=config.threads,
        )
        precisions[name] = {
            "file": path.name,
            "size_bytes": path.stat().st_size,
            "parity": {
                "max_abs_error": par.max_abs_error,
                "worst_output": par.worst_output,
                "tolerance": par.tolerance,
                "passed": par.passed,
            },
            "heldout": scores,
            "latency": speed.as_dict(),
        }
    base = precisions["fp32"]
    for name, p in precisions.items():
        p["size_ratio"] = p["size_bytes"] / base["size_bytes"]
        p["accuracy_drop"] = base["heldout"]["accuracy"] - p["heldout"]["accuracy"]
        allowed = config.fp16_budget if name == "fp16" else config.budget
        p["within_budget"] = p["accuracy_drop"] <= allowed + 1e-9
        p["speed_note"] = _speed_note(name, base["latency"], p["latency"])
    if heldout_preds is not None:
        temperature = float(inp.meta.metrics.get("temperature", 1.0))
        base["heldout"]["calibration"] = calibration_json(heldout_preds, temperature)
    return precisions


def _recall_points(p: Predictions) -> dict[str, float]:
    """Each class's recall on the held-out images, in points (none for multilabel tasks)."""
    m = screening_metrics(p, resamples=0)
    return {k[7:-1]: 100.0 * v.value for k, v in m.items() if k.startswith("recall[")}


def _copy_weights(ckpt: Path, tmp: Path) -> None:
    # the weights travel too (safetensors + JSON, never pickle): federated adaptation on the
    # device trains the deployed model itself, and the next export starts from them
    (tmp / CHECKPOINT_DIR).mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copyfile(
            ckpt.with_suffix(suffix), (tmp / CHECKPOINT_DIR / "model").with_suffix(suffix)
        )


def _build(run_dir: Path, tmp: Path, config: ExportConfig, log: Log) -> dict[str, Any]:
    inp = _read_inputs(run_dir, config)
    fp32, lint = _export_fp32(inp, tmp, config, log)
    reference = _sample(inp.splits.val, config.validation_size, config.seed + 3).pixels()
    write_reference(fp32, reference, inp.spec, inp.meta.task, inp.threshold, tmp)  # drift
    files, extra = _reduced_precisions(inp, run_dir, fp32, tmp, config, log)
    precisions = _measure(inp, files, tmp, config, log)
    recipe = engine_recipe(inp.spec.size, config.tensorrt, inp.spec.channels)
    # without DLA the file stays what agents before dla_batches read (their schema forbids extras)
    unset = {"dla_batches"} if recipe.dla_batches is None else None
    (tmp / "recipe.json").write_text(recipe.model_dump_json(indent=2, exclude=unset))
    engines = build_engines(tmp, recipe)
    _copy_weights(inp.ckpt, tmp)
    meta = inp.meta
    return {
        "schema_version": SCHEMA_VERSION,
        "checkpoint": str(inp.ckpt.resolve()),
        "weights": f"{CHECKPOINT_DIR}/model.json",
        "model": {"name": meta.name, "family": meta.family, "parameters": meta.parameters},
        "task": meta.task.model_dump(mode="json"),
        "requires": list(meta.requires),
        "preprocess": inp.spec.model_dump(mode="json"),
        "opset": config.opset,
        "budget": {"int8_points": config.budget, "fp16_points": config.fp16_budget},
        "operating_point": point_from_metrics(meta.metrics, meta.task).as_dict(),
        "heldout": {"split": inp.heldout_name, "images": len(inp.heldout)},
        "calibration": {"split": "train", "images": len(inp.calib)},
        "precisions": precisions,
        **extra,
        "lint": [i.as_dict() for i in lint],
        "engines": [e.as_dict() for e in engines],
        "config": config.model_dump(mode="json"),
    }


def export(
    run_dir: Path,
    out_dir: Path | None = None,
    config: ExportConfig | None = None,
    *,
    log: Log = lambda s: None,
) -> ExportResult:
    """Export the student of ``run_dir`` into ``out_dir`` (default ``run_dir/export``)."""
    config = config or ExportConfig()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "export"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        report = _build(run_dir, tmp, config, log)
        (tmp / EXPORT_FILE).write_text(json.dumps(report, indent=2))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, report)
