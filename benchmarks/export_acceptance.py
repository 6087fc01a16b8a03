"""Acceptance of the export stage, side by side in one run.

1. The teacher in PyTorch (what a user would run without Fovea) against the student at each
   precision in ONNX Runtime: batch-1 latency, batch-32 throughput, held-out accuracy, ratios.
2. Fovea's INT8 (symmetric Q/DQ, calibration chosen by accuracy, fallback) against ONNX
   Runtime's default ``quantize_static`` on the same model: accuracy and speed.
3. The INT8 file's size against fp32, and each precision's parity error.

    python -m benchmarks.export_acceptance --run .fovea/demo/student    # after `fovea demo`
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import quantize_static

from benchmarks.report import write
from models.nets import load_checkpoint
from server.distill import load_config
from server.export import (
    CalibrationReader,
    ExportConfig,
    Speed,
    export,
    measure,
    onnx_speed,
    predict_onnx,
    quiet,
    score,
    session,
)
from server.training import load_splits, predict


def _teacher_speed(checkpoint: Path, size: int, batch: int, runs: int) -> Speed:
    model, _ = load_checkpoint(checkpoint)

    def forward(x: np.ndarray) -> object:
        with torch.no_grad():
            return model(torch.from_numpy(x))

    return measure(forward, size, batch=batch, runs=runs)


def main() -> None:
    """Export the run's student, then measure everything in this one process."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path(".fovea/demo/student"))
    ap.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    ap.add_argument("--runs", type=int, default=50, help="batch-1 timing repetitions")
    ap.add_argument("--quick", action="store_true", help="smoke-sized: few images and runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = 5 if args.quick else args.runs
    cfg = ExportConfig(
        threads=args.threads,
        latency_runs=runs,
        **(
            {"heldout_limit": 64, "calibration_size": 64, "min_calibration": 16}
            if args.quick
            else {}
        ),
    )
    run_cfg = load_config(args.run / "config.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        report = export(args.run, out, cfg, log=lambda s: print(f"  {s}", flush=True)).report
        spec_size = report["preprocess"]["size"]
        threshold = report["operating_point"]["referral_threshold"]
        _, meta = load_checkpoint(args.run / "student.json")
        splits = load_splits(run_cfg.data, run_cfg.seed)
        heldout = splits.test if splits.test is not None else splits.val
        if cfg.heldout_limit and len(heldout) > cfg.heldout_limit:
            keep = np.sort(
                np.random.default_rng(cfg.seed).choice(len(heldout), cfg.heldout_limit, False)
            )
            heldout = heldout.subset(keep)
        rows: dict[str, dict[str, Any]] = {}
        if isinstance(run_cfg.teacher, Path):  # a teacher checkpoint (not one by source)
            t_model, t_meta = load_checkpoint(run_cfg.teacher)
            p = predict(t_model, heldout, t_meta.preprocess)
            p = dataclasses.replace(
                p, referral_threshold=t_meta.metrics.get("referral_threshold", 0.5)
            )
            speed = _teacher_speed(run_cfg.teacher, t_meta.preprocess.size, 32, runs)
            rows["teacher (PyTorch fp32)"] = {
                "parameters": t_meta.parameters,
                "accuracy": score(p)["accuracy"],
                "parity": None,
                **speed.as_dict(),
            }
        for name, entry in report["precisions"].items():
            speed = onnx_speed(out / entry["file"], spec_size, runs=runs, threads=args.threads)
            rows[f"student {name} (ORT)"] = {
                "parameters": meta.parameters,
                "accuracy": entry["heldout"]["accuracy"],
                "parity": entry["parity"]["max_abs_error"],
                "size_bytes": entry["size_bytes"],
                **speed.as_dict(),
            }
        # ONNX Runtime's defaults: QDQ, MinMax, per-tensor, asymmetric activations
        default = out / "model.int8-ort-default.onnx"
        calib = meta.preprocess.normalise(splits.train.images[: cfg.calibration_size])
        with quiet():
            quantize_static(str(out / "model.fp32.onnx"), str(default), CalibrationReader(calib))
        acc = score(predict_onnx(session(default), heldout, meta.preprocess, threshold, meta.task))
        speed = onnx_speed(default, spec_size, runs=runs, threads=args.threads)
        rows["student int8, ORT default quantize_static"] = {
            "parameters": meta.parameters,
            "accuracy": acc["accuracy"],
            "parity": None,
            "size_bytes": default.stat().st_size,
            **speed.as_dict(),
        }
    base = next(iter(rows.values()))
    table = [
        ["model", "accuracy %", "batch-1 ms", "img/s @32", "latency ratio", "throughput ratio"]
    ]
    for name, r in rows.items():
        r["latency_ratio_vs_first"] = base["latency_ms_batch1"] / r["latency_ms_batch1"]
        r["throughput_ratio_vs_first"] = r["throughput_img_s"] / base["throughput_img_s"]
        table.append(
            [
                name,
                f"{r['accuracy']:.2f}",
                f"{r['latency_ms_batch1']:.2f}",
                f"{r['throughput_img_s']:.0f}",
                f"{r['latency_ratio_vs_first']:.1f}x",
                f"{r['throughput_ratio_vs_first']:.1f}x",
            ]
        )
    fp32 = report["precisions"]["fp32"]
    acceptance = {
        "int8_accuracy_drop": fp32["heldout"]["accuracy"]
        - report["precisions"]["int8"]["heldout"]["accuracy"],
        "fp16_accuracy_drop": fp32["heldout"]["accuracy"]
        - report["precisions"]["fp16"]["heldout"]["accuracy"],
        "int8_size_ratio": report["precisions"]["int8"]["size_ratio"],
        "int8_method": report["int8"]["method"],
        "int8_excluded": report["int8"]["excluded"],
    }
    print(acceptance)
    write(
        "export_acceptance",
        {
            "run": str(args.run),
            "threads": args.threads,
            "heldout": report["heldout"],
            "rows": rows,
            "acceptance": acceptance,
            "export": report,
        },
        table,
    )


if __name__ == "__main__":
    main()
