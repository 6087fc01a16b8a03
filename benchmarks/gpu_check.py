"""The device check for a machine with a CUDA GPU, in one run of at most ``--budget`` seconds:

    python -m benchmarks.gpu_check                 # on the lent GPU machine (~5-8 min)

1. ``pytest -m gpu``: the tests that need a GPU (cuda-python buffers, CUDA training paths);
2. CUDA fp16 training: a small distillation on generated data with ``train.precision: mixed``
   (autocast + gradient scaling), through to its checkpoint;
3. TF32 parity: that student's logits on the GPU with TF32 matmuls allowed against the CPU in
   fp32, the largest error beside the golden tolerances (``GOLDEN_TOLERANCE`` for exact fp32
   providers, ``GPU_TOLERANCE`` where TF32 kernels may be chosen);
4. the GPU benchmark section (``benchmarks.gpu``, PyTorch CUDA and ONNX Runtime CUDA).

Without a GPU each step says "skipped: no CUDA GPU" and the script exits 0; each step's status,
time and figures go to results/gpu_check.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import write

NO_GPU = "skipped: no CUDA GPU"


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _subprocess(args: list[str], timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        return {"status": f"failed: over its {timeout:.0f} s share of the budget"}
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    status = "passed" if done.returncode == 0 else f"failed: exit {done.returncode}"
    return {"status": status, "tail": tail}


def gpu_tests(timeout: float) -> dict[str, Any]:
    """The ``gpu``-marked tests."""
    args = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    return _subprocess(args, timeout)


def fp16_training(work: Path) -> dict[str, Any]:
    """A small distillation on CUDA with mixed precision; returns its figures and checkpoint."""
    from server.distill import parse_config, run
    from server.training import synthesise

    sites = [f"site-{s}" for s in "abcde"]  # training, validation and held-out sites
    synthesise(work / "data", sites=sites, per_site=128, size=64, seed=0)
    cfg = parse_config(
        {
            "teacher": None,
            "student": {"name": "resnet", "config": {"width": 8, "depths": [1, 1, 1]}},
            "data": {"dir": str(work / "data")},
            "train": {"epochs": 2, "batch_size": 64, "precision": "mixed", "device": "cuda"},
            "monitor": {"enabled": False},
            "out": str(work / "run"),
            "bootstrap": 0,
        }
    )
    result = run(cfg, name="student", log=lambda s: None)
    return {"status": "passed", "checkpoint": str(result.checkpoint)}


def tf32_parity(checkpoint: Path) -> dict[str, Any]:
    """Largest logit error of the GPU with TF32 allowed against the CPU in fp32."""
    import numpy as np
    import torch

    from edge_agent.runtime import GOLDEN_TOLERANCE, GPU_TOLERANCE
    from models.nets import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    x = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in model(x).items()}
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        gpu = {k: v.float().cpu().numpy() for k, v in model.cuda()(x.cuda()).items()}
    error = max(float(np.abs(gpu[k] - reference[k]).max()) for k in reference)
    return {
        "status": "passed" if error <= GPU_TOLERANCE["fp32"] else "failed: over tolerance",
        "max_abs_error": error,
        "within_exact_fp32_tolerance": error <= GOLDEN_TOLERANCE["fp32"],
        "tf32_tolerance": GPU_TOLERANCE["fp32"],
    }


def _step(name: str, fn: Callable[[], dict[str, Any]], results: dict[str, Any]) -> Any:
    start = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # one failed step must not hide the others
        results[name] = {"status": f"failed: {type(exc).__name__}: {exc}"}
    results[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{name}: {results[name]['status']} ({results[name]['seconds']} s)", flush=True)
    return results[name]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the steps that fit the budget; write results/gpu_check.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all steps")
    args = parser.parse_args(argv)
    start, results = time.perf_counter(), {}
    steps = ("gpu_tests", "fp16_training", "tf32_parity", "benchmark")

    def left() -> float:
        return float(args.budget - (time.perf_counter() - start))

    if not _has_cuda():
        results = {k: {"status": NO_GPU} for k in steps}
    else:
        _step("gpu_tests", lambda: gpu_tests(left() * 0.4), results)
        with tempfile.TemporaryDirectory() as tmp:
            trained = _step("fp16_training", lambda: fp16_training(Path(tmp)), results)
            if "checkpoint" in trained:
                _step("tf32_parity", lambda: tf32_parity(Path(trained["checkpoint"])), results)
        bench = [sys.executable, "-m", "benchmarks.gpu"]
        _step("benchmark", lambda: _subprocess(bench, left()), results)
    table = [["step", "status", "seconds"]]
    table += [[k, v["status"], str(v.get("seconds", ""))] for k, v in results.items()]
    write("gpu_check", {"budget_s": args.budget, "steps": results}, table)
    return results


if __name__ == "__main__":
    main()
