"""GPU: teacher and student, fp32 vs fp16, in PyTorch CUDA and ONNX Runtime CUDA where present.

Without a CUDA GPU it prints "skipped: no GPU" and writes a result that says so. Models come from
the demo workdir (teacher checkpoint, student export) or, without one, untrained nets of the same
architecture (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import write

NO_GPU = "skipped: no GPU"
NO_ORT_CUDA = "skipped: onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"


def _time(step: Callable[[], None], sync: Callable[[], None], runs: int) -> float:
    """Median seconds of ``step`` after warm-up."""
    for _ in range(max(3, runs // 10)):
        step()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(
    make: Callable[[int], Callable[[], None]], sync: Callable[[], None], runs: int, batch: int
) -> dict[str, Any]:
    one = _time(make(1), sync, runs)
    many = _time(make(batch), sync, max(5, runs // 4))
    return {"latency_ms_batch1": 1e3 * one, "throughput_img_s": batch / many, "batch": batch}


def torch_rows(checkpoint: Path, label: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """PyTorch CUDA fp32 and fp16 (``.half()``) timings of one checkpoint."""
    import torch

    from models.nets import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    model = model.eval().cuda()
    rows: dict[str, Any] = {}
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        net = model.to(dtype)

        def make(n: int, net: Any = net, dtype: Any = dtype) -> Callable[[], None]:
            x = torch.randn(n, 3, size, size, device="cuda", dtype=dtype)

            def step() -> None:
                with torch.inference_mode():
                    net(x)

            return step

        rows[f"{label} {precision} (PyTorch CUDA)"] = _measure(
            make, torch.cuda.synchronize, args.runs, args.batch
        )
    return rows


def ort_rows(export: Path, label: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """ONNX Runtime CUDA timings of the export's fp32 and fp16 files."""
    import numpy as np
    import onnxruntime as ort

    rows: dict[str, Any] = {}
    for precision in ("fp32", "fp16"):
        name = f"{label} {precision} (ONNX Runtime CUDA)"
        path = export / f"model.{precision}.onnx"
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            rows[name] = {"skipped": NO_ORT_CUDA}
            continue
        if not path.is_file():
            rows[name] = {"skipped": f"skipped: {path} not exported"}
            continue
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        if "CUDAExecutionProvider" not in session.get_providers():
            rows[name] = {"skipped": "skipped: ONNX Runtime could not start its CUDA provider"}
            continue
        feed = session.get_inputs()[0].name

        def make(n: int, session: Any = session, feed: str = feed) -> Callable[[], None]:
            x = np.random.default_rng(0).standard_normal((n, 3, size, size), dtype=np.float32)

            def step() -> None:
                session.run(None, {feed: x})

            return step

        rows[name] = _measure(make, lambda: None, args.runs, args.batch)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse flags, time every combination present, write results/gpu[_quick].{json,md}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(".fovea/demo"), help="demo workdir")
    ap.add_argument("--runs", type=int, default=200, help="batch-1 timing repetitions")
    ap.add_argument("--batch", type=int, default=32, help="throughput batch size")
    ap.add_argument("--quick", action="store_true", help="few runs (CI smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = 20
    name = "gpu_quick" if args.quick else "gpu"
    import torch

    if not torch.cuda.is_available():
        print(NO_GPU)
        write(name, {"skipped": NO_GPU}, [["comparison", "result"], ["GPU section", NO_GPU]])
        return {"skipped": NO_GPU}
    from benchmarks.agent_models import export_dir

    rows: dict[str, Any] = {}
    sources = {}
    for model in ("teacher", "student"):
        export, sources[model] = export_dir(model, args.workdir, args.quick)
        size = int(json.loads((export / "export.json").read_text())["preprocess"]["size"])
        rows |= torch_rows(export.parent / "student.json", model, size, args)
        rows |= ort_rows(export, model, size, args)
    table = [["model", "batch-1 ms", f"img/s @{args.batch}"]]
    for label, m in rows.items():
        if "skipped" in m:
            table.append([label, m["skipped"], ""])
        else:
            table.append([label, f"{m['latency_ms_batch1']:.3f}", f"{m['throughput_img_s']:,.0f}"])
    payload = {"gpu": torch.cuda.get_device_name(0), "sources": sources, "rows": rows}
    write(name, payload, table)
    return payload


if __name__ == "__main__":
    main()
