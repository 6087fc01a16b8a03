"""Clinical-scale model pairs (issue 16): a ResNet-50 teacher beside a MobileNetV3-Large student.

Real DR models run at 299-512 px. In one run, on this CPU:

1. The teacher ``timm:resnet50`` at 448 px in PyTorch (eager fp32, torch threads = the machine's
   cores) and the same network exported to ONNX in ONNX Runtime: batch-1 latency, batch-32
   throughput.
2. The student ``timm:mobilenetv3_large_100`` at 384 px through Fovea's own export (fp32, fp16,
   symmetric INT8 Q/DQ, dynamic INT8; the DR task's heads) in ONNX Runtime, each precision's
   latency and throughput, parity and held-out accuracy (random weights: speed does not depend
   on them, accuracy here only says whether a precision keeps fp32's answers).
3. Acceptance: the student's best precision >= 25x the PyTorch teacher's batch-32 throughput,
   with the batch-1 latency ratio beside it.
4. The edge agent's precision choice (``edge_agent.runtime.choose_precision``, as install runs
   it) on the student's export dir: what it picked, against the benchmark's fastest precision
   that passed its accuracy check.

timm imports only in the timm venv::

    .venv-timm/bin/python -m benchmarks.clinical_models          # ~30 min on 2 busy cores
    .venv-timm/bin/python -m benchmarks.clinical_models --quick  # 128/96 px, batch 4

Synthetic data, the checkpoints and exports are cached under ``.fovea/bench/clinical_models/``
so a rerun continues where it stopped; timings are always taken afresh, side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import write

NAME = "clinical_models"
CACHE = Path(".fovea/bench/clinical_models")
TEACHER = "timm:resnet50"
STUDENT = "timm:mobilenetv3_large_100"
TARGET_RATIO = 25.0
TIMM_HINT = "run with .venv-timm/bin/python; make test-timm builds it"
SITES = {"train": "site-a", "test": "site-e"}
Log = Callable[[str], None]


@dataclass(frozen=True)
class Scale:
    """Image sizes, batch, timing repetitions and data sizes of one run."""

    teacher_size: int
    student_size: int
    batch: int
    runs: int
    per_site: int
    methods: tuple[str, ...] = ("MinMax", "Entropy", "Percentile")
    """INT8 calibration methods the export tries (the accuracy-aware choice among them)."""
    max_excluded: int = 4
    """Layers the INT8 fallback may keep in float (each try re-quantizes the model)."""

    @property
    def export_config(self) -> dict[str, Any]:
        """Export settings sized for this scale (small samples: 384-px renders are slow)."""
        return {
            "calibration_size": min(64, self.per_site),
            "min_calibration": 16,
            "golden_size": 8,
            "validation_size": 64,
            "heldout_limit": 64,
            "sensitivity_samples": 32,
            "max_excluded": self.max_excluded,
            "latency_runs": 3,
            "throughput_batch": self.batch,
            "calibration_methods": list(self.methods),
        }


FULL = Scale(teacher_size=448, student_size=384, batch=32, runs=20, per_site=96)
QUICK = Scale(teacher_size=128, student_size=96, batch=4, runs=3, per_site=48)


class TimmMissing(SystemExit):
    """timm cannot be imported in this Python."""


def require_timm() -> None:
    """Exit with what to do when timm cannot be imported here."""
    try:
        import timm  # noqa: F401
    except Exception as e:  # beside the CPU torch wheel timm fails with a RuntimeError
        raise TimmMissing(
            f"benchmarks.clinical_models needs timm, which cannot be imported here "
            f"({type(e).__name__}: {e}); {TIMM_HINT}"
        ) from None


def _data(scale: Scale, log: Log) -> Path:
    from server.training import dataset_matches, synthesise

    out = CACHE / f"data-{scale.student_size}"
    sites, n, size = list(SITES.values()), scale.per_site, scale.student_size
    if not dataset_matches(out, sites=sites, per_site=n, size=size, seed=0):
        log(f"rendering {n} synthetic images per site at {size} px")
        synthesise(out, sites=sites, per_site=n, size=size, seed=0)
    return out


def _run_dir(scale: Scale, data: Path) -> Path:
    """A run directory holding the untrained student's checkpoint and a config naming data."""
    import torch

    from models import PreprocessSpec
    from models.nets import build_model, save_checkpoint
    from server.distill import dump_config, parse_config

    run_dir = CACHE / f"student-{scale.student_size}"
    if (run_dir / "student.json").is_file():
        return run_dir
    torch.manual_seed(0)
    arch = {"image_size": scale.student_size}
    net = build_model(STUDENT, arch)
    spec = PreprocessSpec(size=scale.student_size)
    save_checkpoint(net, run_dir / "student", name="clinical-student", preprocess=spec)
    cfg = parse_config(
        {
            "teacher": None,
            "student": {"name": STUDENT, "config": arch},
            "data": {
                "dir": str(data.resolve()),
                "train_sites": [SITES["train"]],
                "test_site": SITES["test"],
            },
            "out": str(run_dir.resolve()),
            "monitor": {"enabled": False},
        }
    )
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    return run_dir


def student_export(scale: Scale, log: Log) -> tuple[Path, dict[str, Any]]:
    """The student's export dir (Fovea's export; reused when done with the same settings)."""
    from server.export import ExportConfig, export

    config = ExportConfig(**scale.export_config)
    run_dir = _run_dir(scale, _data(scale, log))
    out = run_dir / "export"
    done = out / "export.json"
    if done.is_file():
        report: dict[str, Any] = json.loads(done.read_text())
        if report.get("config") == config.model_dump(mode="json"):
            log(f"reusing the student's export {out}")
            return out, report
    log(f"exporting {STUDENT} at {scale.student_size} px through Fovea's export to {out}")
    result = export(run_dir, out, config, log=lambda s: log(f"  export: {s}"))
    return out, result.report


def _teacher(scale: Scale) -> tuple[Any, Path]:
    """The teacher network and its ONNX file (exported once, cached)."""
    import torch

    from models.nets import build_model
    from server.export import export_onnx

    torch.manual_seed(0)
    net = build_model(TEACHER, {"image_size": scale.teacher_size}).eval()
    path = CACHE / f"teacher-{scale.teacher_size}" / "model.fp32.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name("model.partial.onnx")
        export_onnx(net, scale.teacher_size, partial)
        partial.replace(path)
    return net, path


def _torch_speed(net: Any, scale: Scale) -> dict[str, float]:
    import torch

    from server.export import measure

    def forward(x: np.ndarray) -> object:
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    return measure(forward, scale.teacher_size, batch=scale.batch, runs=scale.runs).as_dict()


def contention(net: Any, scale: Scale) -> dict[str, Any]:
    """The teacher's batch-1 latency in PyTorch on every core and on one: on a shared machine
    whose cores are busy, more OpenMP threads run slower, and every ratio here is suspect."""
    import torch

    cores = torch.get_num_threads()
    ms = {}
    for threads in dict.fromkeys((cores, 1)):
        torch.set_num_threads(threads)
        ms[threads] = _torch_speed(net, dataclasses.replace(scale, batch=1, runs=3))
    torch.set_num_threads(cores)
    one, every = ms[1]["latency_ms_batch1"], ms[cores]["latency_ms_batch1"]
    return {
        "batch1_ms_every_core": every,
        "batch1_ms_one_thread": one,
        "oversubscribed": cores > 1 and one < every,
        "load_average": os.getloadavg(),
    }


def _ort_speed(path: Path, size: int, scale: Scale) -> dict[str, float]:
    from server.export import onnx_speed

    return onnx_speed(path, size, batch=scale.batch, runs=scale.runs).as_dict()


def agent_choice(export_dir: Path, batch: int) -> dict[str, Any]:
    """The agent's measured precision choice on ``export_dir`` (ONNX Runtime, ``batch`` rows)."""
    from edge_agent.runtime import BundleInfo, SelectionSettings, choose_precision

    info = BundleInfo.from_export_dir(export_dir)
    settings = SelectionSettings(batch=batch, backends=("onnxruntime",), threads=0)
    return choose_precision(export_dir, info, settings).as_dict()


def passed_fastest(rows: dict[str, dict[str, Any]]) -> str | None:
    """The fastest student precision that kept parity and its accuracy budget, or None."""
    ok = {k: r for k, r in rows.items() if r.get("passed")}
    return max(ok, key=lambda k: ok[k]["throughput_img_s"]) if ok else None


def _student_rows(out: Path, report: dict[str, Any], scale: Scale) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name, entry in report["precisions"].items():
        passed = bool(entry["parity"]["passed"] and entry["within_budget"])
        rows[name] = {
            "file": entry["file"],
            "size_bytes": entry["size_bytes"],
            "parity_max_abs_error": entry["parity"]["max_abs_error"],
            "heldout_accuracy": entry["heldout"]["accuracy"],
            "accuracy_drop": entry["accuracy_drop"],
            "passed": passed,
            **_ort_speed(out / entry["file"], scale.student_size, scale),
        }
    return rows


def table(result: dict[str, Any], scale: Scale) -> list[list[str]]:
    """The side-by-side table: both teacher runtimes, then each student precision."""
    teacher = {k: result["teacher"][k] for k in ("pytorch", "onnxruntime")}
    student = result["student"]["precisions"]
    base = teacher["pytorch"]
    head = ["model", "runtime", "px", "batch-1 ms", f"img/s @{scale.batch}", "vs teacher (PyTorch)"]
    out = [head]
    for name, r in teacher.items():
        runtime = "PyTorch eager fp32" if name == "pytorch" else "ONNX Runtime fp32"
        out.append(_row(f"teacher {TEACHER}", runtime, scale.teacher_size, r, base))
    for name, r in student.items():
        verdict = "" if r["passed"] else " (failed its check)"
        runtime = f"ONNX Runtime {name}{verdict}"
        out.append(_row(f"student {STUDENT}", runtime, scale.student_size, r, base))
    return out


def _row(model: str, runtime: str, px: int, r: dict[str, Any], base: dict[str, Any]) -> list[str]:
    ratio = r["throughput_img_s"] / base["throughput_img_s"]
    latency = base["latency_ms_batch1"] / r["latency_ms_batch1"]
    return [
        model,
        runtime,
        str(px),
        f"{r['latency_ms_batch1']:.1f}",
        f"{r['throughput_img_s']:.1f}",
        f"{ratio:.1f}x throughput, {latency:.1f}x latency",
    ]


def run(scale: Scale, log: Log = print) -> dict[str, Any]:
    """Export (or reuse) both models, time them side by side, and run the agent's choice."""
    import onnxruntime as ort
    import torch

    require_timm()
    torch.set_num_threads(os.cpu_count() or 1)
    out, report = student_export(scale, log)
    net, teacher_onnx = _teacher(scale)
    log(f"timing the teacher at {scale.teacher_size} px in PyTorch and ONNX Runtime")
    teacher = {
        "pytorch": _torch_speed(net, scale),
        "onnxruntime": _ort_speed(teacher_onnx, scale.teacher_size, scale),
    }
    teacher_params = sum(p.numel() for p in net.parameters())
    busy = contention(net, scale)
    del net
    log("timing the student's precisions in ONNX Runtime")
    student = _student_rows(out, report, scale)
    log("running the agent's precision choice on the student's export")
    choice = agent_choice(out, scale.batch)
    best = passed_fastest(student)
    torch_tp = teacher["pytorch"]["throughput_img_s"]
    best_row = student[best] if best else max(student.values(), key=lambda r: r["throughput_img_s"])
    chosen = (choice.get("chosen") or {}).get("precision")
    acceptance = {
        "student_best_precision": best,
        "throughput_ratio": best_row["throughput_img_s"] / torch_tp,
        "latency_ratio": teacher["pytorch"]["latency_ms_batch1"] / best_row["latency_ms_batch1"],
        "target_throughput_ratio": TARGET_RATIO,
        "passed": best is not None and best_row["throughput_img_s"] / torch_tp >= TARGET_RATIO,
        "teacher_ort_vs_pytorch": teacher["onnxruntime"]["throughput_img_s"] / torch_tp,
        "int8_vs_fp32": student["int8"]["throughput_img_s"] / student["fp32"]["throughput_img_s"]
        if "int8" in student
        else None,
        "agent_chose": chosen,
        "agent_agrees": chosen == best,
        "machine_oversubscribed": busy["oversubscribed"],
    }
    return {
        "scale": scale.__dict__,
        "threads": {"torch": torch.get_num_threads(), "onnxruntime": "default (0)"},
        "contention": {**busy, "load_average_at_end": os.getloadavg()},
        "onnxruntime": ort.__version__,
        "cpu_flags": _cpu_flags(),
        "teacher": {"source": TEACHER, "parameters": teacher_params, **teacher},
        "student": {
            "source": STUDENT,
            "parameters": report["model"]["parameters"],
            "export_dir": str(out),
            "export_files_bytes": {
                p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()
            },
            "precisions": student,
            "int8": report.get("int8"),
        },
        "agent_choice": choice,
        "acceptance": acceptance,
    }


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")))


def summary(result: dict[str, Any]) -> str:
    """The acceptance and the agent's choice in a few lines."""
    a = result["acceptance"]
    choice = result["agent_choice"]
    measured = {
        m["precision"]: f"{m['status']}, {m['throughput_img_s'] or 0:.1f} img/s"
        for m in choice["measurements"]
    }
    lines = [
        f"student ({a['student_best_precision']}) vs teacher in PyTorch at batch "
        f"{result['scale']['batch']}: {a['throughput_ratio']:.1f}x throughput (target "
        f"{a['target_throughput_ratio']:.0f}x: {'passed' if a['passed'] else 'NOT MET'}), "
        f"{a['latency_ratio']:.1f}x batch-1 latency",
        f"teacher in ONNX Runtime vs PyTorch: {a['teacher_ort_vs_pytorch']:.2f}x throughput",
    ]
    busy = result["contention"]
    if busy["oversubscribed"]:
        lines.append(
            f"WARNING: the cores are busy (load {busy['load_average'][0]:.1f}): PyTorch's teacher "
            f"ran batch 1 in {busy['batch1_ms_one_thread']:.0f} ms on one thread but "
            f"{busy['batch1_ms_every_core']:.0f} ms on every core; rerun on a quiet machine"
        )
    if a["int8_vs_fp32"] is not None:
        lines.append(f"student INT8 Q/DQ vs fp32 (VNNI): {a['int8_vs_fp32']:.2f}x throughput")
    lines.append(
        f"agent's precision choice: {a['agent_chose']} ("
        + "; ".join(f"{k}: {v}" for k, v in measured.items())
        + f"); {'agrees with' if a['agent_agrees'] else 'differs from'} the benchmark's "
        f"fastest passing precision {a['student_best_precision']}"
    )
    return "\n".join(lines)


def main() -> None:
    """Run at full (or ``--quick``) scale, print the table and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-sized: 128/96 px, batch 4")
    args = ap.parse_args()
    require_timm()
    scale = QUICK if args.quick else FULL
    result = run(scale, log=lambda s: print(s, flush=True))
    write(NAME + ("_quick" if args.quick else ""), result, table(result, scale))
    print(summary(result))


if __name__ == "__main__":
    main()
