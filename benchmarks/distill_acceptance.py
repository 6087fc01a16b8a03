"""Acceptance of the distillation stage, side by side in one run.

1. Teacher vs distilled student (<= 1/10 of its parameters) on >= 5,000 images of a site never
   trained on: accuracy ratio; each model at its own operating point (threshold and temperature
   fitted on validation only, at the task's target sensitivity, 0.95 for DR): the student's
   referable sensitivity >= 95% at specificity >= the floor (80%), and student - teacher
   >= -1.5 points on each (the paired bootstrap interval's lower bound); per-grade recall.
2. Distilled vs the same student trained without the teacher (same data, epochs,
   augmentation), over several seeds: accuracy and kappa gaps as mean, spread, paired intervals.
3. Monitor cost: their share of epoch time, and epoch time with monitors on vs off.

    python -m benchmarks.distill_acceptance            # about 30 min on 2 cores
    python -m benchmarks.distill_acceptance --quick    # a smoke-sized run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import write
from benchmarks.screening_point import point_of, screening_rows
from models import DR_GRADING, Predictions, paired_difference, screening_metrics
from models.datasets import FundusArrays
from models.nets import load_checkpoint, read_meta
from models.synth import SITES, generate
from server.distill import parse_config, run
from server.training import DataConfig, dataset_matches, load_site, predict, synthesise

TRAIN_SITES = ["site-a", "site-b", "site-c", "site-d"]
TEST_SITE = "site-e"
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def _data(work: Path, per_site: int, n_test: int, size: int) -> Path:
    data = work / "data"
    if not dataset_matches(data, sites=TRAIN_SITES, per_site=per_site, size=size, seed=0):
        synthesise(data, sites=TRAIN_SITES, per_site=per_site, size=size, seed=0, progress=True)
    test = data / f"{TEST_SITE}.npz"
    if not test.is_file() or len(load_site(data, TEST_SITE)) != n_test:
        generate(SITES[TEST_SITE], n_test, size=size, seed=1).save(test)
    return data


def _base(data: Path, out: Path, args: argparse.Namespace, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": DataConfig(dir=data, train_sites=TRAIN_SITES, test_site=TEST_SITE).model_dump(
            mode="json"
        ),
        "out": str(out),
        "bootstrap": 0,
    }
    cfg.update(over)
    return cfg


def _finished(out: Path, name: str) -> bool:
    return (out / "metrics.json").is_file() and (out / f"{name}.json").is_file()


def _train(cfg: dict[str, Any], name: str) -> Path:
    out = Path(cfg["out"])
    if not _finished(out, name):
        t0 = time.perf_counter()
        run(parse_config(cfg), name=name, log=lambda s: print(f"  [{out.name}] {s}", flush=True))
        print(f"  [{out.name}] done in {time.perf_counter() - t0:.0f}s", flush=True)
    return out / f"{name}.json"


def _train_all(
    jobs: dict[tuple[str, int], dict[str, Any]], workers: int
) -> dict[tuple[str, int], Path]:
    """Train every run, ``workers`` at a time (separate processes: a GPU or many cores)."""
    if workers <= 1:
        return {key: _train(cfg, "student") for key, cfg in jobs.items()}
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_limit_threads, initargs=(threads,)
    ) as pool:
        futures = {key: pool.submit(_train, cfg, "student") for key, cfg in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


def _limit_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _predict(checkpoint: Path, test: FundusArrays) -> Predictions:
    """A checkpoint's predictions, with its own preprocessing and referral threshold (chosen
    on its validation split when it was trained)."""
    model, meta = load_checkpoint(checkpoint)
    p = predict(model, test, meta.preprocess)
    return dataclasses.replace(p, referral_threshold=meta.metrics.get("referral_threshold", 0.5))


def _check_workdir(work: Path, args: argparse.Namespace) -> None:
    """Cached runs are reused only by a benchmark with the same settings."""
    key = {k: str(v) for k, v in vars(args).items() if k not in ("workdir", "jobs")}
    path = work / "args.json"
    if path.is_file() and json.loads(path.read_text()) != key:
        raise SystemExit(
            f"{work} holds runs made with other settings ({path}); pass another "
            "--workdir or delete it"
        )
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key, indent=1))


def _interval(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    mean, sd = float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
    half = T_975.get(len(a) - 1, 2.0) * sd / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def main() -> None:
    """Run every comparison and write results/distill_acceptance.{json,md}."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path(".fovea/bench/distill"))
    ap.add_argument("--per-site", type=int, default=3000)
    ap.add_argument("--test-images", type=int, default=5000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--teacher", default="resnet-teacher")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--student", default="resnet-student")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--alpha", type=float, help="fixed alpha (with --temperature: no search)")
    ap.add_argument("--temperature", type=float, help="fixed temperature")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument(
        "--jobs", type=int, default=1, help="student runs trained at once (GPU or many cores)"
    )
    args = ap.parse_args()
    if args.quick:
        args.per_site, args.test_images, args.teacher_epochs, args.epochs = 200, 300, 1, 1
        args.seeds = [0, 1]
        args.workdir = args.workdir.with_name(args.workdir.name + "-quick")
    work = args.workdir
    _check_workdir(work, args)
    data = _data(work, args.per_site, args.test_images, args.size)

    print("teacher ...", flush=True)
    teacher = _train(
        _base(
            data,
            work / "teacher",
            args,
            teacher=None,
            student={"name": args.teacher},
            train={"epochs": args.teacher_epochs},
            monitor={"enabled": False},
        ),
        "teacher",
    )

    if args.alpha is not None and args.temperature is not None:
        best = {"alpha": args.alpha, "temperature": args.temperature, "searched": False}
    else:
        print("search (seed 0) ...", flush=True)
        search_out = work / "search"
        if not (search_out / "search.json").is_file():
            run(
                parse_config(
                    _base(
                        data,
                        search_out,
                        args,
                        teacher=str(teacher),
                        student={"name": args.student},
                        train={"epochs": 1},
                        monitor={"enabled": False},
                        search={
                            "enabled": True,
                            "epochs": 2 if not args.quick else 1,
                            "temperatures": [2.0, 3.5, 5.0],
                            "alphas": [0.3, 0.6, 0.9],
                        },
                    )
                ),
                log=lambda s: print(f"  [search] {s}", flush=True),
            )
        best = json.loads((search_out / "search.json").read_text())["best"]
    loss = {"alpha": {"start": best["alpha"]}, "temperature": {"start": best["temperature"]}}

    seed0 = args.seeds[0]
    jobs: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in args.seeds:
        common = {"student": {"name": args.student}, "train": {"epochs": args.epochs}, "seed": seed}
        jobs["distilled", seed] = _base(
            data, work / f"distilled-{seed}", args, teacher=str(teacher), loss=loss, **common
        )
        jobs["scratch", seed] = _base(
            data, work / f"scratch-{seed}", args, teacher=None, monitor={"enabled": False}, **common
        )
    jobs["monitors-off", seed0] = _base(
        data,
        work / f"monitors-off-{seed0}",
        args,
        teacher=str(teacher),
        loss=loss,
        student={"name": args.student},
        train={"epochs": args.epochs},
        monitor={"enabled": False},
        seed=seed0,
    )
    done = _train_all(jobs, args.jobs)
    runs = {kind: {s: done[kind, s] for s in args.seeds} for kind in ("distilled", "scratch")}
    off = done["monitors-off", seed0]

    test = load_site(data, TEST_SITE)
    t_meta = read_meta(teacher)
    p_teacher = _predict(teacher, test)
    preds = {kind: {s: _predict(p, test) for s, p in paths.items()} for kind, paths in runs.items()}
    m_teacher = screening_metrics(p_teacher, resamples=1000)
    result: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "search": best,
        "test_images": len(test),
        "teacher": {k: v.as_dict() for k, v in m_teacher.items()},
        "teacher_parameters": t_meta.parameters,
    }
    s_params = json.loads(runs["distilled"][seed0].read_text())["parameters"]
    result["student_parameters"] = s_params

    # 1. student vs teacher, per seed
    vs_teacher: dict[int, dict[str, Any]] = {}
    for s, p in preds["distilled"].items():
        m = screening_metrics(p, resamples=1000, seed=s)
        d = paired_difference(p, p_teacher, resamples=1000, seed=s)
        vs_teacher[s] = {
            "accuracy_ratio": m["accuracy"].value / m_teacher["accuracy"].value,
            "operating_point": point_of(runs["distilled"][s]).as_dict(),
            "student": {k: v.as_dict() for k, v in m.items()},
            "minus_teacher": {k: v.as_dict() for k, v in d.items()},
        }
    result["student_vs_teacher"] = vs_teacher
    result["teacher_operating_point"] = point_of(teacher).as_dict()

    # 2. distilled vs scratch
    gaps: dict[str, list[float]] = {"accuracy": [], "kappa": []}
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    for s in args.seeds:
        gap = paired_difference(preds["distilled"][s], preds["scratch"][s], resamples=1000, seed=s)
        per_seed[s] = {k: gap[k].as_dict() for k in gaps}
        for k in gaps:
            gaps[k].append(gap[k].value)
    result["distilled_minus_scratch"] = {
        "per_seed": per_seed,
        "over_seeds": {k: _interval(v) for k, v in gaps.items()},
    }

    # 3. monitor cost
    on = json.loads((runs["distilled"][seed0].parent / "metrics.json").read_text())["training"]
    off_t = json.loads((off.parent / "metrics.json").read_text())["training"]
    epoch_on = float(np.mean(on["epoch_seconds"]))
    epoch_off = float(np.mean(off_t["epoch_seconds"]))
    mon = float(np.mean(on["monitor_seconds"]))
    result["monitors"] = {
        "monitor_seconds_per_epoch": mon,
        "epoch_seconds_on": epoch_on,
        "epoch_seconds_off": epoch_off,
        "share_of_epoch": mon / epoch_on,
        "epoch_time_ratio_on_off": (epoch_on + mon) / epoch_off,
    }

    rows = [["comparison", "value", "95% interval", "target"]]
    ratio = [v["accuracy_ratio"] for v in vs_teacher.values()]
    rows.append(
        ["student params / teacher params", f"{s_params / t_meta.parameters:.3f}", "", "<= 0.100"]
    )
    rows.append(
        [
            "teacher accuracy (unseen site)",
            f"{m_teacher['accuracy'].value:.3f}",
            f"[{m_teacher['accuracy'].low:.3f}, {m_teacher['accuracy'].high:.3f}]",
            "",
        ]
    )
    rows.append(
        [
            "teacher referable AUC",
            f"{m_teacher['referable_auc'].value:.3f}",
            f"[{m_teacher['referable_auc'].low:.3f}, {m_teacher['referable_auc'].high:.3f}]",
            "0.93-0.99",
        ]
    )
    rows += screening_rows(result, DR_GRADING.referral.specificity_floor)
    for s, v in vs_teacher.items():
        st = v["student"]["accuracy"]
        rows.append(
            [
                f"seed {s}: student accuracy / teacher",
                f"{v['accuracy_ratio']:.3f}",
                f"student {st['value']:.3f} [{st['low']:.3f}, {st['high']:.3f}]",
                ">= 0.98",
            ]
        )
    rows.append(["mean accuracy ratio over seeds", f"{np.mean(ratio):.3f}", "", ">= 0.98"])
    for k, iv in result["distilled_minus_scratch"]["over_seeds"].items():
        rows.append(
            [
                f"distilled - scratch {k} ({len(args.seeds)} seeds)",
                f"{iv['mean']:+.4f} (sd {iv['sd']:.4f})",
                f"[{iv['low']:+.4f}, {iv['high']:+.4f}] (t)",
                "> 0",
            ]
        )
        for s, seed_gap in per_seed.items():
            rows.append(
                [
                    f"  seed {s} paired bootstrap",
                    f"{seed_gap[k]['value']:+.4f}",
                    f"[{seed_gap[k]['low']:+.4f}, {seed_gap[k]['high']:+.4f}]",
                    "",
                ]
            )
    mo = result["monitors"]
    rows.append(
        [
            "monitor time / epoch time",
            f"{mo['share_of_epoch']:.3f}",
            f"{mo['monitor_seconds_per_epoch']:.2f}s of {mo['epoch_seconds_on']:.1f}s",
            "<= 0.10",
        ]
    )
    rows.append(
        [
            "epoch time, monitors on / off",
            f"{mo['epoch_time_ratio_on_off']:.3f}",
            f"{mo['epoch_seconds_on'] + mo['monitor_seconds_per_epoch']:.1f}s vs "
            f"{mo['epoch_seconds_off']:.1f}s",
            "<= 1.10",
        ]
    )
    write("distill_acceptance" + ("_quick" if args.quick else ""), result, rows)


if __name__ == "__main__":
    main()
