"""``fovea demo``: the loop on built-in defaults, each stage resumable and timed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from models.synth.profiles import SITES
from server.demo_agent import agent_stage
from server.distill.config import (
    AugmentConfig,
    DataConfig,
    DistillConfig,
    LossConfig,
    ModelRef,
    MonitorConfig,
    Schedule,
    SearchConfig,
    TrainConfig,
)
from server.distill.data import dataset_matches, synthesise
from server.distill.run import run
from server.progress import progress_reporter
from server.summary import print_run_summary

SIZE = 64
PER_SITE = 2000
SEED = 0
BUDGET_SECONDS = {"data": 30, "teacher": 240, "distill": 210, "export": 90, "devices": 90}
"""Stated time budget per stage on 2 CPU cores."""


def teacher_config(workdir: Path) -> DistillConfig:
    """The demo's teacher: a 1.6 M-parameter ResNet trained on four sites."""
    return DistillConfig(
        teacher=None,
        student=ModelRef(name="resnet-teacher"),
        data=DataConfig(dir=workdir / "data"),
        # flips only: stronger augmentation kept the wide teacher on its early plateau for
        # epochs (measured), and the teacher has one budget of minutes
        augment=AugmentConfig(brightness=0, contrast=0, saturation=0, erase_p=0),
        train=TrainConfig(epochs=6, lr=3e-3),
        monitor=MonitorConfig(enabled=False),
        out=workdir / "teacher",
        seed=SEED,
        bootstrap=300,
    )


def student_config(workdir: Path) -> DistillConfig:
    """The demo's student: a ~78 k-parameter ResNet (1/20 of the teacher), searched T and alpha."""
    return DistillConfig(
        teacher=workdir / "teacher" / "teacher.json",
        student=ModelRef(name="resnet-student"),
        data=DataConfig(dir=workdir / "data"),
        loss=LossConfig(alpha=Schedule(start=0.6), temperature=Schedule(start=3.0)),
        train=TrainConfig(epochs=8, lr=4e-3),
        search=SearchConfig(
            enabled=True, temperatures=[2.0, 4.0], alphas=[0.3, 0.7], epochs=2, fraction=0.5
        ),
        out=workdir / "student",
        seed=SEED,
        bootstrap=300,
    )


def _finished(run_dir: Path, name: str) -> bool:
    return (run_dir / "metrics.json").is_file() and (run_dir / f"{name}.json").is_file()


def run_demo(workdir: Path, *, fresh: bool = False, console: Console | None = None) -> None:
    """Synthetic data -> teacher (cached) -> student -> export -> edge agent -> summary."""
    console = console or Console()
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    sites = list(SITES)

    console.rule("stage 1/5: synthetic data")
    t0 = time.perf_counter()
    data = workdir / "data"
    if not fresh and dataset_matches(data, sites=sites, per_site=PER_SITE, size=SIZE, seed=SEED):
        console.print(f"reusing {data}")
    else:
        synthesise(data, sites=sites, per_site=PER_SITE, size=SIZE, seed=SEED, progress=True)
    timings["data"] = time.perf_counter() - t0

    for stage, name, cfg in (
        ("stage 2/5: teacher", "teacher", teacher_config(workdir)),
        ("stage 3/5: distillation", "student", student_config(workdir)),
    ):
        console.rule(stage)
        t0 = time.perf_counter()
        if not fresh and _finished(cfg.out, name):
            console.print(f"reusing {cfg.out} (delete it, or pass --fresh, to retrain)")
            metrics = json.loads((cfg.out / "metrics.json").read_text())
        else:
            with progress_reporter(console) as report:
                metrics = run(
                    cfg, name=name, log=console.print, report=report, resume=not fresh
                ).metrics
        timings[name if name == "teacher" else "distill"] = time.perf_counter() - t0
        print_run_summary(metrics, cfg.out, console)

    console.rule("stage 4/5: export")
    t0 = time.perf_counter()
    exported = _export_stage(workdir / "student", fresh=fresh, console=console)
    timings["export"] = time.perf_counter() - t0

    console.rule("stage 5/5: devices (flash, fleet, screening)")
    t0 = time.perf_counter()
    edge = agent_stage(workdir, exported, console)
    timings["devices"] = time.perf_counter() - t0

    lines = [
        f"{stage:8s} {seconds:6.0f}s (budget {BUDGET_SECONDS[stage]}s)"
        for stage, seconds in timings.items()
    ]
    lines += [
        "",
        f"data:     {data}",
        f"teacher:  {workdir / 'teacher'}",
        f"student:  {workdir / 'student'} (metrics.json, monitor.jsonl, plots/monitors.png)",
        f"export:   {exported} (export.json, model.*.onnx, recipe.json)",
        f"bundle:   {edge.bundle} (signed with {workdir / 'keys' / 'demo.key'})",
        f"devices:  {', '.join(str(p) for p in edge.devices.values())}",
        f"fleet:    {edge.fleet_db} (fovea fleet list --db {edge.fleet_db})",
        f"tokens:   {edge.tokens}; serve a device again with",
        f"          fovea-agent serve --root {next(iter(edge.devices.values()))} --port 8000",
    ]
    console.print(Panel("\n".join(lines), title="fovea demo: done"))


def _export_stage(run_dir: Path, *, fresh: bool, console: Console) -> Path:
    """The demo student to ONNX fp32/fp16/INT8 (reused when its export.json is newer)."""
    from server.export import ExportConfig, export
    from server.export.report import EXPORT_FILE, print_export_summary

    out = run_dir / "export"
    done = out / EXPORT_FILE
    if (
        not fresh
        and done.is_file()
        and done.stat().st_mtime >= (run_dir / "student.json").stat().st_mtime
    ):
        console.print(f"reusing {out} (delete it, or pass --fresh, to export again)")
        report = json.loads(done.read_text())
    else:
        with console.status("exporting ...") as status:
            report = export(run_dir, out, ExportConfig(), log=lambda s: status.update(s)).report
    print_export_summary(report, str(out), console)
    return out
