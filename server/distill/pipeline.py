"""A distillation run end to end: data, teacher, search, training, evaluation, run directory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import PreprocessSpec, TaskSpec
from models.datasets import FundusArrays
from models.nets import (
    Ancestor,
    CheckpointMeta,
    FundusNet,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)
from server.distill.config import DistillConfig, dump_config
from server.distill.search import search_temperature
from server.distill.trainer import FitResult, Trainer
from server.training import (
    ModelRef,
    Reporter,
    Schedule,
    ScoreOptions,
    Splits,
    TrainingData,
    build_ref,
    compare,
    init_distributed,
    load_splits,
    pick_device,
    ref_file,
    score_headline,
    score_model,
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunOutcome:
    """Where a run wrote its results, and the headline numbers."""

    out: Path
    checkpoint: Path
    metrics: dict[str, Any]


def _load_teacher(
    cfg: DistillConfig, task: TaskSpec, log: Log
) -> tuple[FundusNet | None, CheckpointMeta | None]:
    if cfg.teacher is None:
        return None, None
    if isinstance(cfg.teacher, ModelRef):
        return build_ref(cfg.teacher, task, log).eval(), None
    if not cfg.teacher.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"teacher checkpoint {cfg.teacher} not found; train one with `fovea teacher train`"
        )
    model, meta = load_checkpoint(cfg.teacher)
    if meta.task != task:
        raise ValueError(
            f"teacher {cfg.teacher} answers task {meta.task.name}, but the data in "
            f"{cfg.data.dir} is labelled for task {task.name}"
        )
    return model, meta


def _check_size(spec: PreprocessSpec, arrays: FundusArrays, what: str) -> None:
    if arrays.size != spec.size:
        raise ValueError(
            f"{what} images are {arrays.size}px but the model expects {spec.size}px; "
            "synthesise the data at the model's size"
        )


def with_search_choice(cfg: DistillConfig, best: dict[str, Any]) -> DistillConfig:
    """``cfg`` with the chosen temperature and alpha as constants."""
    loss = cfg.loss.model_copy(
        update={
            "alpha": Schedule(start=best["alpha"]),
            "temperature": Schedule(start=best["temperature"]),
        }
    )
    return cfg.model_copy(update={"loss": loss})


def _search(
    cfg: DistillConfig,
    teacher: FundusNet,
    spec: PreprocessSpec,
    splits: Splits,
    *,
    rank: int,
    resume: bool,
    log: Log,
) -> dict[str, Any]:
    """The search's result: reused from ``search.json`` when it was run with these settings."""
    path = cfg.out / "search.json"
    key = cfg.model_dump(mode="json", include={"search", "student", "data", "train", "seed"})
    if resume and path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("settings") == key:
            log(f"reusing the search in {path}")
            return dict(previous)
    result = {**search_temperature(cfg, teacher, spec, splits, log=log), "settings": key}
    if rank == 0:
        path.write_text(json.dumps(result, indent=2))
    best = result["best"]
    log(f"search chose T={best['temperature']}, alpha={best['alpha']}")
    return result


def file_size(path: Path) -> int:
    """Bytes of a checkpoint's weights."""
    return path.with_suffix(".safetensors").stat().st_size


@dataclass(frozen=True)
class _Inputs:
    """What a run trains on: the splits, the preprocessing and the teacher (if any)."""

    splits: Splits
    spec: PreprocessSpec
    teacher: FundusNet | None
    teacher_meta: CheckpointMeta | None

    @classmethod
    def load(cls, cfg: DistillConfig, log: Log) -> _Inputs:
        """Load the data and the teacher; check the images are the size the model expects."""
        splits: Splits = load_splits(cfg.data, cfg.seed)
        teacher, meta = _load_teacher(cfg, splits.task, log)
        crop = splits.task.input.preprocessing
        spec = (
            meta.preprocess
            if meta
            else PreprocessSpec.fitted(splits.train.fitting_sample(), crop=crop)
        )
        for what, arr in (("training", splits.train), ("test", splits.test)):
            if arr is not None:
                _check_size(spec, arr, what)
        log(
            f"task {splits.task.name}, data: {len(splits.train)} training, "
            f"{len(splits.val)} validation images"
            + (f", {len(splits.test)} from unseen {cfg.data.test_site}" if splits.test else "")
        )
        return cls(splits, spec, teacher, meta)

    def lineage(self, cfg: DistillConfig) -> list[Ancestor]:
        """The teacher's ancestors and the teacher itself (none without a teacher)."""
        meta = self.teacher_meta
        if isinstance(cfg.teacher, ModelRef) and self.teacher is not None:
            parameters = count_parameters(self.teacher)
            return [
                Ancestor(name=cfg.teacher.name, family=self.teacher.family, parameters=parameters)
            ]
        return [] if meta is None else meta.as_teacher()


@dataclass(frozen=True)
class _Trained:
    """A finished fit, how long it took, and the search that chose its settings (if any)."""

    fit: FitResult
    seconds: float
    search: dict[str, Any] | None


def run(
    cfg: DistillConfig,
    *,
    name: str = "student",
    log: Log = print,
    report: Reporter | None = None,
    resume: bool = True,
) -> RunOutcome:
    """Train ``cfg.student`` (distilled from ``cfg.teacher`` when set) and write the run dir.

    Under ``torchrun`` every process trains its share of each batch (DistributedDataParallel,
    gloo on CPU, NCCL on CUDA); only rank 0 evaluates and writes.
    """
    rank = init_distributed(cfg.train.device)
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    inputs = _Inputs.load(cfg, log)
    splits, spec, teacher = inputs.splits, inputs.spec, inputs.teacher

    search_result = None
    if cfg.search.enabled and teacher is not None:
        search_result = _search(cfg, teacher, spec, splits, rank=rank, resume=resume, log=log)
        cfg = with_search_choice(cfg, search_result["best"])
    if rank == 0:
        (out / "config.yaml").write_text(dump_config(cfg))

    torch.manual_seed(cfg.seed)  # initial weights and projectors depend on the seed alone
    student = build_ref(cfg.student, splits.task, log)
    data = TrainingData(spec, splits.train, splits.val)
    trainer = Trainer(cfg, student, teacher, data, out, report=report, log=log)
    t0 = time.perf_counter()
    fit = trainer.fit(resume=resume)
    trained = _Trained(fit, time.perf_counter() - t0, search_result)
    if rank != 0:
        return RunOutcome(out=out, checkpoint=out / f"{name}.json", metrics={})
    return _evaluate(cfg, name, inputs, trained, log)


def _evaluate(
    cfg: DistillConfig, name: str, inputs: _Inputs, trained: _Trained, log: Log
) -> RunOutcome:
    """Score the student (and the teacher) with bootstrap intervals; save the checkpoint,
    ``metrics.json`` and the monitors' plot."""
    out, splits, spec, teacher, fit = (
        cfg.out,
        inputs.splits,
        inputs.spec,
        inputs.teacher,
        trained.fit,
    )
    device = pick_device(cfg.train.device)
    lineage = inputs.lineage(cfg)
    log("evaluating with bootstrap intervals ...")
    split_arrays = {"val": splits.val, "test": splits.test}
    opts = ScoreOptions(cfg.referral_sensitivity, cfg.bootstrap, cfg.seed, device)
    scored = score_model(fit.student, split_arrays, spec, opts)
    results: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "generation": len(lineage),
        name: scored.entry,
    }
    headline = score_headline(scored.entry["val"]) | scored.point_metrics()
    ckpt = save_checkpoint(
        fit.student, out / name, name=name, preprocess=spec, lineage=lineage, metrics=headline
    )
    results[name]["file_bytes"] = file_size(ckpt)
    if teacher is not None and cfg.teacher is not None:
        t_scored = score_model(teacher, split_arrays, spec, opts)
        results["teacher"] = {**t_scored.entry, **_teacher_bytes(cfg.teacher)}
        split = "test" if splits.test is not None else "val"
        results |= compare(scored, t_scored, split, resamples=cfg.bootstrap, seed=cfg.seed)
        results["lineage"] = [a.model_dump() for a in lineage]
    results |= _training_record(trained)
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    if fit.history:
        from server.distill.plots import plot_monitors

        plot_monitors(fit.history, fit.events, out / "plots" / "monitors.png")
    return RunOutcome(out=out, checkpoint=ckpt, metrics=results)


def _teacher_bytes(teacher: Path | ModelRef) -> dict[str, int]:
    """``file_bytes`` of the teacher's file (none for a source with random weights)."""
    if isinstance(teacher, Path):
        return {"file_bytes": file_size(teacher)}
    path = ref_file(teacher)
    return {"file_bytes": path.stat().st_size} if path is not None else {}


def _training_record(trained: _Trained) -> dict[str, Any]:
    """``metrics.json``'s ``training`` entry, and ``search`` when a search chose the settings."""
    fit = trained.fit
    record: dict[str, Any] = {
        "training": {
            "seconds": trained.seconds,
            "epoch_seconds": fit.epoch_seconds,
            "monitor_seconds": fit.monitor_seconds,
            "layer_map": fit.layer_map,
            "alerts": sum(1 for e in fit.events if e["event"] == "alert"),
        }
    }
    if trained.search:
        record["search"] = {
            **trained.search["best"],
            "teacher_helps": trained.search.get("teacher_helps"),
        }
    return record
