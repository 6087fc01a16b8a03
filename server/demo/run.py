"""``fovea demo``: the whole loop on built-in defaults, each stage resumable and timed."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from models.synth import SITES
from server.compress import CompressConfig, parse_compress_config
from server.console import print_run_summary, progress_reporter
from server.demo.agent import agent_stage, rollout_stage
from server.distill import DistillConfig, LossConfig, MonitorConfig, SearchConfig, run
from server.training import (
    AugmentConfig,
    DataConfig,
    ModelRef,
    Schedule,
    TrainConfig,
    dataset_matches,
    synthesise,
)

SIZE = 64
PER_SITE = 2000
SEED = 0
BUDGET_SECONDS = {
    "data": 20,
    "teacher": 210,
    "distill": 210,
    "compress": 60,
    "export": 40,
    "devices": 60,
    "federation": 180,
    "rollout": 45,
    "report": 30,
}
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


def compress_config(workdir: Path) -> CompressConfig:
    """The demo's compression: one epoch of quantisation-aware distillation of the student
    (fake INT8, per-channel weights), so the exported INT8 model is the one trained for it."""
    student = student_config(workdir)
    base = student.model_copy(
        update={
            "train": student.train.model_copy(update={"epochs": 1}),
            "search": SearchConfig(enabled=False),
            "monitor": MonitorConfig(enabled=False),
        }
    )
    return parse_compress_config(
        {
            "teacher": str(workdir / "teacher" / "teacher.json"),
            "start": str(workdir / "student" / "student.json"),
            "distill": base.model_dump(mode="json", exclude={"teacher", "student", "out"}),
            "steps": [{"kind": "qat", "epochs": 1}],
            "out": str(workdir / "compress"),
        },
        "the demo's compression",
    )


def _finished(run_dir: Path, name: str) -> bool:
    return (run_dir / "metrics.json").is_file() and (run_dir / f"{name}.json").is_file()


class _Stages:
    """``demo.json``: which of the later stages finished, and on what input (a stage whose input
    changed runs again, and every stage after it)."""

    def __init__(self, workdir: Path, fresh: bool) -> None:
        self.path = workdir / "demo.json"
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.is_file() and not fresh:
            self.done = dict(json.loads(self.path.read_text()).get("stages", {}))

    def result(self, name: str, key: str) -> dict[str, Any] | None:
        """What stage ``name`` recorded, if it finished on input ``key``."""
        entry = self.done.get(name)
        return entry if entry is not None and entry.get("key") == key else None

    def record(self, name: str, key: str, **outputs: Any) -> None:
        """Mark ``name`` finished (dropping the stages after it) and save atomically."""
        order = list(BUDGET_SECONDS)
        for later in order[order.index(name) + 1 :]:
            self.done.pop(later, None)
        self.done[name] = {"key": key, **outputs}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"schema_version": 1, "stages": self.done}, indent=1))
        tmp.replace(self.path)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class _Outcome:
    """What the stages left, for the closing summary."""

    data: Path
    compressed: Path
    exported: Path
    deployed: Path
    devices: list[str]
    federated: str
    rolled: str
    report: Path
    adaptation: dict[str, Any] | None = None


class _Demo:
    """One ``fovea demo`` run: its working directory, its console, the stages' timings and
    ``demo.json``; a method per stage that reuses what finished."""

    def __init__(self, workdir: Path, fresh: bool, console: Console) -> None:
        self.workdir = workdir
        self.fresh = fresh
        self.console = console
        self.stages = _Stages(workdir, fresh)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, title: str) -> Iterator[None]:
        """Announce stage ``name`` with its budget, and time what runs inside."""
        number = list(BUDGET_SECONDS).index(name) + 1
        total = len(BUDGET_SECONDS)
        self.console.rule(f"stage {number}/{total}: {title} (budget {BUDGET_SECONDS[name]} s)")
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0

    def data(self) -> Path:
        """The synthetic sites (reused when the dataset on disk was made with these settings)."""
        data = self.workdir / "data"
        shape: dict[str, Any] = {"sites": list(SITES), "per_site": PER_SITE, "size": SIZE}
        if not self.fresh and dataset_matches(data, **shape, seed=SEED):
            self.console.print(f"reusing {data}")
        else:
            synthesise(data, **shape, seed=SEED, progress=True)
        return data

    def train(self, stage: str, title: str, name: str, cfg: DistillConfig) -> None:
        """Stage ``stage``: a distillation run named ``name`` (reused when it finished)."""
        with self.stage(stage, title):
            if not self.fresh and _finished(cfg.out, name):
                self.console.print(f"reusing {cfg.out} (delete it, or pass --fresh, to retrain)")
                metrics = json.loads((cfg.out / "metrics.json").read_text())
            else:
                with progress_reporter(self.console) as report:
                    metrics = run(
                        cfg, name=name, log=self.console.print, report=report, resume=not self.fresh
                    ).metrics
        print_run_summary(metrics, cfg.out, self.console)

    def devices(self, exported: Path) -> dict[str, Any]:
        """Sign, flash, enrol and screen (reused while the export is the same)."""
        key = _digest(exported / "export.json")
        devices = self.stages.result("devices", key)
        if devices is not None:
            self.console.print(
                f"reusing: {len(devices['devices'])} devices flashed with {devices['bundle']}"
            )
            return devices
        edge = agent_stage(self.workdir, exported, self.console)
        devices = {
            "bundle": str(edge.bundle),
            "devices": {k: str(v) for k, v in edge.devices.items()},
            "screened": edge.screened,
        }
        self.stages.record("devices", key, **devices)
        return devices

    def federation(self, roots: dict[str, str], exported: Path, deployed: Path) -> dict[str, Any]:
        """Federated rounds on the devices, then promotion (reused while the deployed bundle
        is the same)."""
        key = _digest(deployed)
        fed = self.stages.result("federation", key)
        if fed is not None:
            self.console.print(f"reusing the federated run: {fed['reason']}")
            return fed
        from server.demo.federation import federation_stage

        outcome = federation_stage(
            self.workdir,
            {name: Path(root) for name, root in roots.items()},
            exported,
            deployed,
            self.workdir / "keys" / "demo.key",
            self.console,
        )
        candidate = outcome.bundle if outcome.promoted else None
        fed = {"promoted": candidate is not None, "bundle": str(candidate) if candidate else None,
               "reason": outcome.reason, "adaptation": outcome.adaptation}  # fmt: skip
        self.stages.record("federation", key, **fed)
        return fed

    def rollout(self, deployed: Path, fed: dict[str, Any]) -> str:
        """Roll the promoted bundle out (reused while it is the same); the rollout's status."""
        if fed["bundle"] is None:
            self.console.print(f"nothing to roll out: the deployed model stays ({fed['reason']})")
            return "not needed"
        key = _digest(Path(fed["bundle"]))
        done = self.stages.result("rollout", key)
        if done is not None:
            rolled = str(done["status"])
            self.console.print(f"reusing: the rollout of {fed['bundle']} {rolled}")
            return rolled
        rolled = rollout_stage(self.workdir, deployed, Path(fed["bundle"]), self.console)
        self.stages.record("rollout", key, status=rolled)
        return rolled

    def summary(self, done: _Outcome) -> Panel:
        """One screen: each stage's time against its budget, and where everything went."""
        timings, workdir = self.timings, self.workdir
        lines = [
            f"{stage:10s} {seconds:6.0f}s (budget {BUDGET_SECONDS[stage]}s)"
            for stage, seconds in timings.items()
        ]
        lines += [
            f"{'total':10s} {sum(timings.values()):6.0f}s (budget {sum(BUDGET_SECONDS.values())}s)",
            "",
            f"report:   {done.report}",
            f"data:     {done.data}",
            f"teacher:  {workdir / 'teacher'}",
            f"student:  {workdir / 'student'} (metrics.json, monitor.jsonl, plots/monitors.png)",
            f"compress: {done.compressed} (report.md, model.qat.onnx)",
            f"export:   {done.exported} (export.json, model.*.onnx, recipe.json)",
            f"bundles:  {done.deployed.parent} (signed with {workdir / 'keys' / 'demo.key'})",
            f"devices:  {', '.join(done.devices)}",
            f"fleet:    {workdir / 'fleet.db'} (fovea fleet list --db {workdir / 'fleet.db'})",
            f"federated: {done.federated}; rollout: {done.rolled}",
            *_adaptation_lines(done.adaptation),
            f"serve a device again: fovea-agent serve --root {done.devices[0]} --port 8000",
        ]
        return Panel("\n".join(lines), title="fovea demo: done")


def run_demo(workdir: Path, *, fresh: bool = False, console: Console | None = None) -> None:
    """The whole loop: synthetic data -> teacher (cached) -> student -> QAT -> export -> bundle
    -> three flashed devices screen their sites -> federated rounds -> promotion -> rollout ->
    report. Each stage resumes: what finished is reused unless its input changed."""
    console = console or Console()
    workdir = workdir.resolve()  # device roots and run configs need absolute paths
    workdir.mkdir(parents=True, exist_ok=True)
    demo = _Demo(workdir, fresh, console)
    with demo.stage("data", "synthetic data"):
        data = demo.data()
    demo.train("teacher", "teacher", "teacher", teacher_config(workdir))
    demo.train("distill", "distillation", "student", student_config(workdir))
    with demo.stage("compress", "compression: quantisation-aware training"):
        compressed = _compress_stage(workdir, fresh=fresh, console=console)
    with demo.stage("export", "export"):
        exported = _export_stage(compressed, workdir / "student", fresh=fresh, console=console)
    with demo.stage("devices", "devices: sign, flash, fleet, screening"):
        devices = demo.devices(exported)
    deployed = Path(devices["bundle"])
    with demo.stage("federation", "federated rounds and promotion"):
        fed = demo.federation(devices["devices"], exported, deployed)
    with demo.stage("rollout", "rollout of the promoted bundle"):
        rolled = demo.rollout(deployed, fed)
    with demo.stage("report", "report"):
        from server.report import build_report

        report = build_report(workdir, log=console.print)
    done = _Outcome(
        data=data,
        compressed=compressed,
        exported=exported,
        deployed=deployed,
        devices=list(devices["devices"].values()),
        federated=fed["reason"],
        rolled=rolled,
        report=report,
        adaptation=fed.get("adaptation"),
    )
    console.print(demo.summary(done))


def _adaptation_lines(result: dict[str, Any] | None) -> list[str]:
    from server.demo.adaptation import describe_adaptation

    if not result:
        return []
    head = f"adaptation at {result['clinic']} (new camera, {result['images']:,} further images):"
    return [head, *(f"  {line}" for line in describe_adaptation(result))]


def _compress_stage(workdir: Path, *, fresh: bool, console: Console) -> Path:
    """``fovea compress`` on the demo student (reused when its result is newer than the
    student); returns the run directory, which the export stage exports."""
    from server.compress import compress, print_compress_summary

    cfg = compress_config(workdir)
    done = cfg.out / "student.json"
    start = workdir / "student" / "student.json"
    if not fresh and done.is_file() and done.stat().st_mtime >= start.stat().st_mtime:
        console.print(f"reusing {cfg.out} (delete it, or pass --fresh, to compress again)")
        report = json.loads((cfg.out / "report.json").read_text())
    else:
        with progress_reporter(console) as reporter:
            report = compress(cfg, log=console.print, report=reporter, resume=not fresh).report
    print_compress_summary(report, cfg.out, console)
    return cfg.out


def _export_stage(run_dir: Path, student: Path, *, fresh: bool, console: Console) -> Path:
    """The compressed student (``run_dir``) to ONNX fp32/fp16/INT8 in ``student/export``, its
    INT8 the QAT model (reused when the export is newer than the run's checkpoint)."""
    from server.export import EXPORT_FILE, ExportConfig, export, print_export_summary

    out = student / "export"
    done = out / EXPORT_FILE
    if (
        not fresh
        and done.is_file()
        and done.stat().st_mtime >= (run_dir / "student.json").stat().st_mtime
        and (out / "checkpoint" / "model.json").is_file()  # exports before weights travelled
    ):
        console.print(f"reusing {out} (delete it, or pass --fresh, to export again)")
        report = json.loads(done.read_text())
    else:
        with console.status("exporting ...") as status:
            cfg = ExportConfig(int8_source="qat")
            report = export(run_dir, out, cfg, log=lambda s: status.update(s)).report
    print_export_summary(report, str(out), console)
    return out
