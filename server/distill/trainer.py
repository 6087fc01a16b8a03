"""The distillation trainer: one loop for teacher training, distillation and baselines.

With no teacher it trains on labels alone (how the teacher itself is made, and the from-scratch
baseline a distilled student must beat).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.nets import FundusNet
from server.distill.config import DistillConfig
from server.distill.losses import Mix, task_loss
from server.distill.monitors import Probe, RetentionGuard, describe_event, measure
from server.distill.projectors import FeatureAligner, auto_layer_map
from server.training import (
    Reporter,
    TrainingData,
    augment,
    epoch_indices,
    load_state,
    loss_targets,
    pick_device,
    point_metrics,
    predict,
    read_batches,
    read_info,
    sampling_classes,
    save_state,
    world,
)


class _Step(nn.Module):
    """Student and projectors as one module, so DistributedDataParallel syncs both."""

    def __init__(self, student: FundusNet, aligner: FeatureAligner | None) -> None:
        super().__init__()
        self.student = student
        self.aligner = aligner

    def forward(
        self, x: torch.Tensor, teacher_taps: dict[str, torch.Tensor] | None, live: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        out, taps = self.student.forward_taps(x)
        if self.aligner is None or teacher_taps is None:
            return out, None
        # with feature distillation off, projectors still learn (on detached features) so that
        # retention stays measurable without steering the student
        used = taps if live else {k: v.detach() for k, v in taps.items()}
        return out, self.aligner.loss(used, teacher_taps)


@dataclass
class FitResult:
    """What a finished fit leaves behind."""

    student: FundusNet
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    monitor_seconds: list[float] = field(default_factory=list)
    layer_map: dict[str, str] = field(default_factory=dict)


class Trainer:
    """Trains ``student`` on ``train`` (from ``teacher`` when given), checking on ``val``."""

    def __init__(
        self,
        config: DistillConfig,
        student: FundusNet,
        teacher: FundusNet | None,
        data: TrainingData,
        out_dir: Path | None,
        *,
        report: Reporter | None = None,
        log: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.cfg = config
        self.device = pick_device(config.train.device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.rank, self.world = world()
        self.student = student.to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if teacher is not None and teacher.task.output_shapes() != student.task.output_shapes():
            raise ValueError(
                f"the teacher answers task {teacher.task.name} "
                f"({dict(teacher.task.output_shapes())}) and the student task "
                f"{student.task.name} ({dict(student.task.output_shapes())}): a student learns "
                "the outputs its teacher gives"
            )
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        spec, train, val = data.spec, data.train, data.val
        self.spec = spec
        self.train_set, self.val_set = train, val
        self.out_dir = out_dir
        self.report = report
        self.log = log
        self.aligner = self._make_aligner()
        self.step_module = _Step(self.student, self.aligner).to(self.device)
        self.ddp: nn.Module = self.step_module
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(self.step_module)
        params = [p for p in self.step_module.parameters() if p.requires_grad]
        tc = config.train
        self.optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        if tc.batch_size % self.world:
            raise ValueError(
                f"train.batch_size {tc.batch_size} must divide evenly over {self.world} processes"
            )
        # under torchrun each process takes its share of every batch: same global batch
        self.rank_batch = tc.batch_size // self.world
        self.steps_per_epoch = max(len(train) // tc.batch_size, 1)
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.guard = RetentionGuard(config.monitor)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=tc.precision == "mixed" and self.device.type == "cuda"
        )
        self.classes = sampling_classes(train, student.task)
        self.grade = torch.from_numpy(loss_targets(train, student.task))
        self.gradable = torch.from_numpy(train.gradable.astype(np.float32))
        self.mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std).view(1, -1, 1, 1)
        # the teacher's passes over the data happen when fitting starts, not here
        self.cached: dict[str, torch.Tensor] | None = None
        self.probe: Probe | None = None
        self.teacher_val: dict[str, float] | None = None
        self._prepared = False

    # ----------------------------------------------------------------------------------- setup
    def _prepare(self) -> None:
        """The teacher's work before the first epoch: cached logits, the probe, its scores."""
        if self._prepared:
            return
        if self.teacher is not None and self.cfg.train.cache_teacher:
            self.cached = self._teacher_outputs_unaugmented()
        self.probe = self._make_probe()
        if self.teacher is not None:
            self.teacher_val = point_metrics(
                predict(self.teacher, self.val_set, self.spec, device=self.device)
            )
        self._prepared = True

    def _make_aligner(self) -> FeatureAligner | None:
        if self.teacher is None or (
            self.cfg.loss.feature_weight == 0 and not self.cfg.monitor.enabled
        ):
            return None
        size = self.spec.size
        s_taps = self.student.tap_channels(size)
        t_taps = self.teacher.tap_channels(size)
        if not s_taps or not t_taps:
            which = "teacher" if not t_taps else "student"
            self.log(
                f"the {which} has no feature taps: distilling from the teacher's outputs only; "
                "feature distillation and the retention monitors are off"
            )
            return None
        mapping = self.cfg.loss.layer_map
        if mapping == "auto":
            mapping = auto_layer_map(s_taps, t_taps, self.cfg.loss.auto_layers)
        return FeatureAligner(mapping, s_taps, t_taps, self.cfg.loss.feature_loss)

    def _make_probe(self) -> Probe | None:
        if self.aligner is None or not self.cfg.monitor.enabled:
            return None
        v = self.val_set
        labelled = np.flatnonzero(v.gradable & (v.grade >= 0))
        # a fixed random draw across sites and grades, the same for every run with this seed
        rng = np.random.default_rng(self.cfg.seed)
        size = min(self.cfg.monitor.probe_size, len(labelled))
        keep = np.sort(rng.choice(labelled, size=size, replace=False))
        grade = torch.from_numpy(loss_targets(v, self.student.task)[keep]).to(self.device)
        return Probe(torch.from_numpy(self.spec.normalise(v.images[keep])).to(self.device), grade)

    @torch.no_grad()
    def _teacher_outputs_unaugmented(self) -> dict[str, torch.Tensor]:
        assert self.teacher is not None
        p = predict(self.teacher, self.train_set, self.spec, device=self.device)
        names = self.teacher.task.outputs
        cached = {names.classes: torch.from_numpy(p.grade_logits)}
        if p.gradable_logit is not None:
            cached[names.quality] = torch.from_numpy(p.gradable_logit)
        return cached

    def _lr_factor(self, step: int) -> float:
        warm = max(int(self.total_steps * self.cfg.train.warmup_fraction), 1)
        if step < warm:
            base = (step + 1) / warm
        else:
            base = 0.5 * (
                1 + math.cos(math.pi * min((step - warm) / max(self.total_steps - warm, 1), 1.0))
            )
        return max(base, 0.01) * self.guard.strength.lr_scale

    def _autocast(self) -> Any:
        if self.cfg.train.precision != "mixed":
            return nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    # ----------------------------------------------------------------------------------- train
    def knobs(self, progress: float) -> dict[str, float]:
        """alpha, temperature and feature weight at ``progress`` (with the guard's changes)."""
        lc = self.cfg.loss
        s = self.guard.strength
        return {
            "alpha": self._alpha(lc.alpha.at(progress), s.alpha_shift) if self.teacher else 0.0,
            "temperature": lc.temperature.at(progress),
            "feature_weight": lc.feature_weight * s.feature_scale,
        }

    @staticmethod
    def _alpha(configured: float, shift: float) -> float:
        # the guard raises alpha up to 0.95, never above what was configured beyond that
        return min(configured + shift, max(configured, 0.95))

    def _batch(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        x = augment(x, self.cfg.augment, gen)
        return ((x - self.mean) / self.std).to(self.device, non_blocking=True)

    def _train_step(
        self, idx: np.ndarray, images: torch.Tensor, gen: torch.Generator, step: int
    ) -> float:
        k = self.knobs(step / max(self.total_steps, 1))
        x = self._batch(images, gen)
        grade = self.grade[idx].to(self.device)
        gradable = self.gradable[idx].to(self.device)
        t_out: dict[str, torch.Tensor] | None = None
        t_taps: dict[str, torch.Tensor] | None = None
        with self._autocast():
            if self.cached is not None:
                t_out = {n: v[idx].to(self.device) for n, v in self.cached.items()}
            elif self.teacher is not None:
                with torch.no_grad():
                    t_out, t_taps = self.teacher.forward_taps(x)
            live = k["feature_weight"] > 0
            out, feat = self.ddp(x, t_taps, live)
            mix = Mix(k["alpha"], k["temperature"], self.cfg.loss.gradable_weight)
            loss = task_loss(self.student.task, out, t_out, grade, gradable, mix)
            if feat is not None:
                loss = loss + (k["feature_weight"] if live else 1.0) * feat
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    def _config_digest(self) -> str:
        cfg = self.cfg.model_dump(mode="json", exclude={"out", "search", "bootstrap"})
        return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]

    def _modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"student": self.student}
        if self.aligner is not None:
            mods["aligner"] = self.aligner
        return mods

    def _resume(self, result: FitResult) -> int:
        if self.out_dir is None:
            return 0
        directory = self.out_dir / "checkpoint"
        info = read_info(directory)
        if info is None:
            return 0
        if info.get("config_digest") != self._config_digest():
            raise ValueError(
                f"{self.out_dir}: holds a run with different settings; choose another output "
                "directory or delete it to start over"
            )
        load_state(directory, info, self._modules(), self.optimizer)
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **info["scheduler"]})
        self.scaler.load_state_dict(info["scaler"])
        self.guard.load_state(info["guard"])
        result.history = info["history"]
        result.events = info["events"]
        result.epoch_seconds = info["epoch_seconds"]
        result.monitor_seconds = info["monitor_seconds"]
        self.log(f"resuming {self.out_dir} after epoch {info['epoch']}")
        return int(info["epoch"])

    def _save(self, epoch: int, result: FitResult) -> None:
        if self.out_dir is None or self.rank != 0:
            return
        sched = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        save_state(
            self.out_dir / "checkpoint",
            self._modules(),
            self.optimizer,
            {
                "epoch": epoch,
                "config_digest": self._config_digest(),
                "scheduler": sched,
                "guard": self.guard.state(),
                "scaler": self.scaler.state_dict(),
                "history": result.history,
                "events": result.events,
                "epoch_seconds": result.epoch_seconds,
                "monitor_seconds": result.monitor_seconds,
            },
        )
        self._write_monitor_log(result)

    def _write_monitor_log(self, result: FitResult) -> None:
        assert self.out_dir is not None
        lines = [json.dumps({"record": "eval", **h}) for h in result.history]
        lines += [json.dumps({"record": "event", **e}) for e in result.events]
        tmp = self.out_dir / "monitor.jsonl.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.out_dir / "monitor.jsonl")

    def fit(self, *, resume: bool = True) -> FitResult:
        """Train for the configured epochs (continuing a checkpointed run when there is one)."""
        result = FitResult(
            student=self.student, layer_map=dict(self.aligner.layer_map) if self.aligner else {}
        )
        start = self._resume(result) if resume else 0
        self._prepare()
        tc = self.cfg.train
        for epoch in range(start, tc.epochs):
            torch.manual_seed(self.cfg.seed * 100_003 + epoch)
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            power, seed = tc.balance_power, self.cfg.seed
            order = epoch_indices(
                self.classes, power, seed, epoch, rank=self.rank, world=self.world
            )
            self.student.train()
            t0 = time.perf_counter()
            losses = []
            rb = self.rank_batch
            batches = [order[b * rb : (b + 1) * rb] for b in range(self.steps_per_epoch)]
            reads = read_batches(self.train_set.images, batches, self.cfg.data.workers)
            for b, (idx, images) in enumerate(reads):
                losses.append(self._train_step(idx, images, gen, epoch * self.steps_per_epoch + b))
                if self.report:
                    self.report(f"epoch {epoch + 1}/{tc.epochs}", b + 1, self.steps_per_epoch)
            result.epoch_seconds.append(time.perf_counter() - t0)
            self._evaluate(epoch + 1, float(np.mean(losses)), result)
            self._save(epoch + 1, result)
        return result

    def _evaluate(self, epoch: int, train_loss: float, result: FitResult) -> None:
        val = point_metrics(predict(self.student, self.val_set, self.spec, device=self.device))
        step = epoch * self.steps_per_epoch
        k = self.knobs(step / max(self.total_steps, 1))
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            **k,
            "strength": self.guard.strength.as_dict(),
            "val": val,
        }
        if self.teacher_val is not None:
            # performance decay from this generation's teacher, tracked as training goes
            record["decay"] = {
                k: val[k] / max(self.teacher_val[k], 1e-9)
                for k in ("accuracy", "kappa")
                if k in val
            }
        if self.probe is not None and self.teacher is not None and self.aligner is not None:
            t0 = time.perf_counter()
            values = measure(self.student, self.teacher, self.aligner, self.probe)
            result.monitor_seconds.append(time.perf_counter() - t0)
            record.update(values)
            events = self.guard.check(epoch, values, self.cfg.loss.alpha.at(1.0))
            for e in events:
                self.log(describe_event(e))
            result.events.extend(events)
        result.history.append(record)
        msg = f"epoch {epoch}: loss {train_loss:.3f}  val acc {val['accuracy']:.3f}"
        if "kappa" in val:
            msg += f"  kappa {val['kappa']:.3f}"
        if "retention" in record:
            msg += (
                f"  retention {record['retention']:.3f}  "
                f"grad-consistency {record['gradient_consistency']:.3f}"
            )
        self.log(msg)
