"""``compress(config)``: run the declared steps with a checkpoint after each, resume, report.

The output directory is also a valid run directory for ``fovea export``: ``student.json`` (the
final model), ``config.yaml`` (its data settings) and, after a ``qat`` step, ``model.qat.onnx``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import PreprocessSpec, TaskSpec
from models.nets import (
    Ancestor,
    CheckpointMeta,
    FundusNet,
    build_model,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)
from server.compress.config import CompressConfig, StartModel, Step
from server.compress.measure import curve_point
from server.compress.qat import QAT_ONNX
from server.compress.recovery import evaluate
from server.compress.report import write_report
from server.compress.steps import Log, StepContext, run_step
from server.distill import dump_config
from server.training import (
    Reporter,
    ScoreOptions,
    Splits,
    TrainingData,
    compare,
    load_splits,
    pick_device,
    score_headline,
    score_model,
)

PROGRESS_FILE = "progress.json"


@dataclass(frozen=True)
class CompressOutcome:
    """Where the run wrote its results, and the report's content."""

    out: Path
    checkpoint: Path
    report: dict[str, Any]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _start_model(cfg: CompressConfig, teacher: FundusNet | None, task: TaskSpec) -> FundusNet:
    if isinstance(cfg.start, StartModel):
        torch.manual_seed(cfg.distill.seed)
        return build_model(cfg.start.model.name, cfg.start.model.config).for_task_(task)
    if cfg.start == "teacher":
        assert teacher is not None
        import copy

        model = copy.deepcopy(teacher)
    else:
        model = load_checkpoint(cfg.start)[0]
        _check_task(model.task, task, cfg.start)
    for p in model.parameters():
        p.requires_grad_(True)  # the teacher's copy comes frozen
    return model


def _check_task(model_task: TaskSpec, data_task: TaskSpec, path: Path) -> None:
    if model_task != data_task:
        raise ValueError(
            f"{path} answers task {model_task.name}, but the data is labelled for task "
            f"{data_task.name}"
        )


def run_key(cfg: CompressConfig) -> str:
    """What every step's work depends on besides its own settings: the base distillation
    settings, and the teacher's and the start model's weights (by content)."""
    settings = {k: v for k, v in cfg.dump().items() if k not in ("steps", "out")}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in (cfg.teacher, cfg.start if isinstance(cfg.start, Path) else None):
        weights = Path(path).with_suffix(".safetensors") if path is not None else None
        if weights is not None and weights.is_file():
            with weights.open("rb") as f:  # streamed: a teacher's weights can be large
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()[:16]


def step_key(step: Step, key: str) -> str:
    """A step's resume digest: its kind and settings, and the run's inputs (:func:`run_key`)."""
    return hashlib.sha256(f"{step.digest()}:{key}".encode()).hexdigest()[:16]


def _finished(out: Path, steps: list[Step], key: str) -> list[dict[str, Any]]:
    """Records of the steps already done, in order, while they match the declared steps and
    were made from the same inputs (a retrained start model or teacher starts over)."""
    path = out / PROGRESS_FILE
    if not path.is_file():
        return []
    done = json.loads(path.read_text()).get("steps", [])
    kept = []
    for step, record in zip(steps, done, strict=False):
        stale = record.get("digest") != step_key(step, key)
        if stale or not Path(record["checkpoint"]).is_file():
            break
        kept.append(record)
    return kept


def _step_dir(out: Path, index: int, step: Step) -> Path:
    return out / "steps" / f"{index + 1:02d}-{step.name}"


def _lineage(meta: CheckpointMeta | None) -> list[Ancestor]:
    """The teacher's ancestors and the teacher itself: what every checkpoint here descends from."""
    return [] if meta is None else meta.as_teacher()


@dataclass(frozen=True)
class _Run:
    """What every step of one compression run shares: its settings, data, teacher and lineage."""

    cfg: CompressConfig
    base: StepContext
    splits: Splits
    spec: PreprocessSpec
    lineage: list[Ancestor]
    key: str
    resume: bool

    @classmethod
    def prepare(cls, cfg: CompressConfig, log: Log, report: Reporter | None, resume: bool) -> _Run:
        """Write the run's settings into ``cfg.out``, load the data and the (frozen) teacher."""
        out = cfg.out
        out.mkdir(parents=True, exist_ok=True)
        dcfg = cfg.run_distill_config()
        (out / "config.yaml").write_text(dump_config(dcfg))
        (out / "compress.json").write_text(json.dumps(cfg.dump(), indent=2))
        splits = load_splits(dcfg.data, dcfg.seed)
        teacher: FundusNet | None = None
        teacher_meta: CheckpointMeta | None = None
        if cfg.teacher is not None:
            teacher, teacher_meta = load_checkpoint(cfg.teacher)
            _check_task(teacher_meta.task, splits.task, cfg.teacher)
            for p in teacher.parameters():
                p.requires_grad_(False)
        crop = splits.task.input.preprocessing
        spec = (
            teacher_meta.preprocess
            if teacher_meta
            else PreprocessSpec.fitted(splits.train.fitting_sample(), crop=crop)
        )
        base = StepContext(
            data=TrainingData(spec, splits.train, splits.val),
            teacher=teacher,
            distill=dcfg,
            out_dir=out,
            log=log,
            report=report,
            test=splits.test,
            teacher_path=cfg.teacher,
            teacher_parameters=count_parameters(teacher) if teacher is not None else None,
        )
        lineage = _lineage(teacher_meta)
        return cls(cfg, base, splits, spec, lineage, run_key(cfg), resume)

    def _claim(self, directory: Path, digest: str, step: Step) -> None:
        """Make ``directory`` this step's, clearing another step's (or a restarted run's)
        partial work."""
        marker = directory / "step.json"
        if directory.exists() and (
            not self.resume
            or not marker.is_file()
            or json.loads(marker.read_text()).get("digest") != digest
        ):
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"digest": digest, **step.as_json()}))

    def step(
        self, index: int, step: Step, model: FundusNet, records: list[dict[str, Any]]
    ) -> tuple[FundusNet, dict[str, Any]]:
        """Run ``step`` on ``model`` in its own directory, checkpoint the result and add its
        record to the progress file after ``records``."""
        cfg, spec, log = self.cfg, self.spec, self.base.log
        directory = _step_dir(cfg.out, index, step)
        digest = step_key(step, self.key)
        self._claim(directory, digest, step)
        log(f"step {index + 1}/{len(cfg.steps)} {step.name} ({step.kind})")
        t0 = time.perf_counter()
        context = StepContext(**{**self.base.__dict__, "out_dir": directory})
        result = run_step(step.kind, model, context, step.settings)
        model = result.model.cpu()
        ckpt = save_checkpoint(
            model,
            directory / "model",
            name=step.name,
            preprocess=spec,
            lineage=self.lineage,
            metrics=result.metrics,
        )
        points = [p for p in result.curve if p.get("label") != "input"] or [
            curve_point("output", model, result.metrics, spec.size, cfg.latency_runs)
        ]
        record = {
            "index": index + 1,
            "name": step.name,
            "kind": step.kind,
            "digest": digest,
            "checkpoint": str(ckpt),
            "seconds": time.perf_counter() - t0,
            "parameters": count_parameters(model),
            "metrics": result.metrics,
            "details": result.details,
            "artifacts": {k: str(v) for k, v in result.artifacts.items()},
            "curve": [{**p, "step": step.name} for p in points],
        }
        _write_json(cfg.out / PROGRESS_FILE, {"schema_version": 1, "steps": [*records, record]})
        return model, record


def compress(
    cfg: CompressConfig,
    *,
    log: Log = print,
    report: Reporter | None = None,
    resume: bool = True,
) -> CompressOutcome:
    """Run ``cfg.steps`` in order from the start model; write checkpoints and the report."""
    run = _Run.prepare(cfg, log, report, resume)
    done = _finished(cfg.out, cfg.steps, run.key) if resume else []
    model = _start_model(cfg, run.base.teacher, run.splits.task)
    start_metrics = evaluate(model, run.base)
    curve = [curve_point("start", model, start_metrics, run.spec.size, cfg.latency_runs)]
    records: list[dict[str, Any]] = []
    for i, step in enumerate(cfg.steps):
        if i < len(done):
            record = done[i]
            model = load_checkpoint(record["checkpoint"])[0]
            log(f"step {i + 1}/{len(cfg.steps)} {step.name}: done before, reusing its checkpoint")
        else:
            model, record = run.step(i, step, model, records)
        records.append(record)
        curve.extend(record["curve"])
    return _finish(run, model, records, curve)


def _finish(
    run: _Run, model: FundusNet, records: list[dict[str, Any]], curve: list[dict[str, Any]]
) -> CompressOutcome:
    """Score the final model (and the teacher), save it as ``student`` and write the report."""
    cfg, splits, spec, teacher = run.cfg, run.splits, run.spec, run.base.teacher
    out = cfg.out
    dcfg = cfg.distill
    run.base.log("scoring the final model and the teacher ...")
    opts = ScoreOptions(
        dcfg.referral_sensitivity, dcfg.bootstrap, dcfg.seed, pick_device(dcfg.train.device)
    )
    split_arrays = {"val": splits.val, "test": splits.test}
    scored = score_model(model, split_arrays, spec, opts)
    headline = score_headline(scored.entry["val"]) | scored.point_metrics()
    ckpt = save_checkpoint(
        model,
        out / "student",
        name="student",
        preprocess=spec,
        lineage=run.lineage,
        metrics=headline,
    )
    qat = [r["artifacts"]["qat_onnx"] for r in records if "qat_onnx" in r["artifacts"]]
    stale = out / QAT_ONNX
    stale.unlink(missing_ok=True)
    if qat and records[-1]["kind"] == "qat":
        shutil.copyfile(qat[-1], stale)
    result: dict[str, Any] = {
        "schema_version": 1,
        "student": scored.entry,
        "steps": records,
        "curve": curve,
        "config": cfg.dump(),
    }
    if teacher is not None:
        t_scored = score_model(teacher, split_arrays, spec, opts)
        split = "test" if splits.test is not None else "val"
        result["teacher"] = t_scored.entry
        result |= compare(scored, t_scored, split, resamples=dcfg.bootstrap, seed=dcfg.seed)
        result["parameter_ratio"] = count_parameters(model) / count_parameters(teacher)
    paths = write_report(result, out)
    result["files"] = {k: str(v) for k, v in paths.items()}
    _write_json(out / "report.json", result)
    return CompressOutcome(out=out, checkpoint=ckpt, report=result)
