"""Head pruning, teacher-assistant chains and routed multi-teacher distillation, side by side.

1. Head pruning at keep 0.6 (L1 gates during distillation, then recovery): accuracy of the ViT
   student before, right after pruning and after recovery, against the unpruned student trained
   for the same extra epochs; latency of both in PyTorch and ONNX Runtime, measured in one run.
2. Teacher-assistant chain vs direct distillation at a large teacher/student size ratio, each
   generation with the temperature/alpha search, with the per-generation decay.
3. Routed vs averaged multi-teacher distillation: one teacher per site, one student for all.

    python -m benchmarks.compress_heads            # about 20 min on 2 busy cores (32 px)
    python -m benchmarks.compress_heads --quick    # a smoke-sized run
    # 64 px on the distillation benchmark's data and 1.57 M teacher (ViT patch 8: 64 tokens)
    python -m benchmarks.compress_heads --data .fovea/bench/distill/data \
        --teacher-checkpoint .fovea/bench/distill/teacher/teacher.json --patch 8
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import torch

from benchmarks.compress_heads_report import table
from benchmarks.report import write
from models.nets import FundusNet, build_model, count_parameters, load_checkpoint, read_meta
from models.synth import SITES, generate
from server.compress import (
    ChainConfig,
    HeadPruneConfig,
    distil_chain,
    plan_chain,
    prune_attention_heads_,
    recover,
)
from server.distill import DistillConfig, RouterConfig, distil_multi_teacher, parse_config, run
from server.training import (
    DataConfig,
    ModelRef,
    TrainingData,
    dataset_matches,
    load_splits,
    point_metrics,
    predict,
    synthesise,
)

SITES_TRAIN = ["site-a", "site-b", "site-c", "site-d"]
TEST_SITE = "site-e"
Log = print


def _data(work: Path, per_site: int, n_test: int, size: int) -> Path:
    data = work / "data"
    if not dataset_matches(data, sites=SITES_TRAIN, per_site=per_site, size=size, seed=0):
        synthesise(data, sites=SITES_TRAIN, per_site=per_site, size=size, seed=0)
    test = data / f"{TEST_SITE}.npz"
    if not test.is_file():
        generate(SITES[TEST_SITE], n_test, size=size, seed=1).save(test)
    return data


def _cfg(data: Path, out: Path, a: argparse.Namespace, **over: Any) -> DistillConfig:
    sites = over.pop("sites", SITES_TRAIN)
    base: dict[str, Any] = {
        "teacher": None,
        "data": DataConfig(dir=data, train_sites=sites, test_site=TEST_SITE).model_dump(
            mode="json"
        ),
        "train": {"epochs": a.epochs, "batch_size": 64, "cache_teacher": True},
        "loss": {"feature_weight": 0.0},
        "monitor": {"enabled": False},
        "search": {
            "temperatures": a.temperatures,
            "alphas": a.alphas,
            "epochs": 1,
            "fraction": 0.5,
            "compare_without_teacher": False,
        },
        "out": str(out),
        "bootstrap": 0,
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and k in base else v
    return parse_config(base)


def _train(cfg: DistillConfig, name: str) -> Path:
    done = cfg.out / f"{name}.json"
    if (cfg.out / "metrics.json").is_file() and done.is_file():
        return done
    return run(cfg, name=name, log=lambda s: None).checkpoint


def _metrics(model: FundusNet, data: TrainingData, test: Any) -> dict[str, dict[str, float]]:
    return {
        "val": point_metrics(predict(model, data.val, data.spec)),
        "test": point_metrics(predict(model, test, data.spec)),
    }


def _latency(models: dict[str, FundusNet], size: int, work: Path, repeats: int) -> dict[str, Any]:
    """Median milliseconds per batch, models interleaved so load changes hit both alike."""
    import onnxruntime as ort

    out: dict[str, Any] = {}
    sessions = {}
    for name, m in models.items():
        path = work / f"{name}.onnx"
        torch.onnx.export(
            m.eval(),
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["grade_logits", "gradable_logit"],
            dynamic_axes={"image": {0: "batch"}},
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    torch.set_num_threads(1)
    for batch in (1, 32):
        x = torch.randn(batch, 3, size, size)
        times: dict[str, dict[str, list[float]]] = {
            n: {"torch": [], "onnxruntime": []} for n in models
        }
        for _ in range(repeats):
            for name, m in models.items():
                with torch.no_grad():
                    t0 = time.perf_counter()
                    m(x)
                    times[name]["torch"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                sessions[name].run(None, {"image": x.numpy()})
                times[name]["onnxruntime"].append(time.perf_counter() - t0)
        for name in models:
            for rt, ts in times[name].items():
                out.setdefault(name, {})[f"{rt}_b{batch}_ms"] = 1000 * statistics.median(ts[3:])
    torch.set_num_threads(2)
    return out


def heads_section(
    data_dir: Path, work: Path, a: argparse.Namespace, teacher: Path
) -> dict[str, Any]:
    """Distil a ViT student, prune 40% of its heads, recover; compare with the unpruned one."""
    vit = {"dim": 64, "depth": 4, "heads": 4, "patch": a.patch, "image_size": a.size}
    cfg = _cfg(
        data_dir,
        work / "vit",
        a,
        teacher=str(teacher),
        student={"name": "vit", "config": vit},
        loss={"alpha": {"start": 0.7}, "temperature": {"start": 3.0}},
        train={"epochs": a.student_epochs},
    )
    student_path = _train(cfg, "student")
    splits = load_splits(cfg.data, cfg.seed)
    t_model, t_meta = load_checkpoint(teacher)
    data = TrainingData(t_meta.preprocess, splits.train, splits.val)
    student, _ = load_checkpoint(student_path)
    base = _metrics(student, data, splits.test)
    Log(f"heads: student val acc {base['val']['accuracy']:.3f}")

    control = copy.deepcopy(student)
    extra = a.gate_epochs + a.recover_epochs
    recover(
        control,
        t_model,
        data,
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": extra})}),
    )

    pruned = copy.deepcopy(student)
    gate_cfg = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"epochs": a.gate_epochs})}
    )
    outcome = prune_attention_heads_(
        pruned, t_model, data, gate_cfg, HeadPruneConfig(keep_ratio=0.6)
    )
    after_prune = _metrics(pruned, data, splits.test)
    rec_cfg = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"epochs": a.recover_epochs})}
    )
    recover(pruned, t_model, data, rec_cfg)
    recovered = _metrics(pruned, data, splits.test)
    control_m = _metrics(control, data, splits.test)
    latency = _latency({"unpruned": control, "pruned": pruned}, a.size, work, a.repeats)
    return {
        "student": {"config": vit, "parameters": count_parameters(student)},
        "prune": outcome.as_dict(),
        "epochs": {
            "student": a.student_epochs,
            "gates": a.gate_epochs,
            "recover": a.recover_epochs,
        },
        "accuracy": {
            "student": base,
            "pruned_before_recovery": after_prune,
            "pruned_recovered": recovered,
            "unpruned_same_extra_epochs": control_m,
        },
        "loss_points_vs_student": {
            s: 100 * (base[s]["accuracy"] - recovered[s]["accuracy"]) for s in ("val", "test")
        },
        "loss_points_vs_control": {
            s: 100 * (control_m[s]["accuracy"] - recovered[s]["accuracy"]) for s in ("val", "test")
        },
        "latency": latency,
    }


def chain_section(
    data_dir: Path, work: Path, a: argparse.Namespace, teacher: Path
) -> dict[str, Any]:
    """Teacher-assistant chain vs direct distillation into the same small student."""
    meta = load_checkpoint(teacher)[1]
    student = ModelRef(name=a.chain_student)
    assistants = plan_chain(
        ModelRef(name=meta.family, config=meta.config), student, ChainConfig(max_ratio=a.max_ratio)
    )
    cfg = _cfg(data_dir, work / "chain", a, teacher=str(teacher), student=student.model_dump())
    direct = distil_chain(cfg, [student], work / "direct", log=lambda s: None)
    chain = distil_chain(cfg, [*assistants, student], work / "chain", log=lambda s: None)
    d, c = direct.generations[-1], chain.generations[-1]
    return {
        "teacher_parameters": meta.parameters,
        "student_parameters": d.parameters,
        "ratio": meta.parameters / d.parameters,
        "assistants": [x.model_dump() for x in assistants],
        "direct": direct.as_dict(),
        "chain": chain.as_dict(),
        "chain_minus_direct_points": 100 * (c.accuracy - d.accuracy),
    }


def routing_section(data_dir: Path, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """One teacher per site; routed vs averaged soft targets into one student."""
    sites = SITES_TRAIN[: a.route_sites]
    teachers = []
    for s in sites:
        cfg = _cfg(
            data_dir,
            work / "site-teachers" / s,
            a,
            sites=[s],
            student={"name": "resnet", "config": {"width": 12, "depths": [1, 1, 1, 1]}},
            train={"epochs": a.teacher_epochs, "cache_teacher": False},
        )
        teachers.append(load_checkpoint(_train(cfg, "teacher"))[0])
    cfg = _cfg(
        data_dir,
        work / "routed",
        a,
        sites=sites,
        loss={"alpha": {"start": 0.7}, "temperature": {"start": 3.0}},
    )
    splits = load_splits(cfg.data, cfg.seed)
    spec = load_checkpoint(work / "site-teachers" / sites[0] / "teacher.json")[1].preprocess
    data = TrainingData(spec, splits.train, splits.val)
    out: dict[str, Any] = {"sites": sites, "teachers": {}}
    for s, t in zip(sites, teachers, strict=True):
        out["teachers"][s] = point_metrics(predict(t, splits.val, spec))["accuracy"]
    modes: tuple[Literal["averaged", "routed"], ...] = ("averaged", "routed")
    assert splits.test is not None
    for mode in modes:
        torch.manual_seed(0)
        st = build_model(a.route_student)
        router = RouterConfig(epochs=a.router_epochs, balance=a.router_balance)
        r = distil_multi_teacher(st, teachers, data, cfg, mode=mode, router=router)
        out[mode] = {
            "student_val": r.val,
            "student_test": point_metrics(predict(st, splits.test, spec)),
            "mixture_val": r.teacher_val,
            "mean_weights": r.mean_weights,
        }
        Log(f"routing {mode}: student val acc {r.val['accuracy']:.3f}")
    out["routed_minus_averaged_points"] = 100 * (
        out["routed"]["student_val"]["accuracy"] - out["averaged"]["student_val"]["accuracy"]
    )
    return out


def main() -> None:
    """Run the three comparisons and write results/compress_heads[_quick].{json,md}."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path(".fovea/bench/compress_heads"))
    ap.add_argument("--per-site", type=int, default=500)
    ap.add_argument("--test-images", type=int, default=600)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--teacher", default="resnet-teacher")
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--student-epochs", type=int, default=8)
    ap.add_argument("--gate-epochs", type=int, default=2)
    ap.add_argument("--recover-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4, help="per chain generation / routed student")
    ap.add_argument("--chain-student", default="mobilenetv2-student")
    ap.add_argument("--max-ratio", type=float, default=6.0)
    ap.add_argument("--route-sites", type=int, default=3)
    ap.add_argument("--route-student", default="resnet-student")
    ap.add_argument("--router-epochs", type=int, default=3)
    ap.add_argument("--router-balance", type=float, default=0.1)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.9])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--patch", type=int, default=4, help="ViT patch size (4 at 32 px: 64 tokens)")
    ap.add_argument("--sections", nargs="+", default=["heads", "chain", "routing"])
    ap.add_argument(
        "--data", type=Path, default=None, help="an existing dataset (site-e as test site)"
    )
    ap.add_argument(
        "--teacher-checkpoint", type=Path, default=None, help="an existing teacher.json"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    a = ap.parse_args()
    if a.quick:
        a.per_site, a.test_images, a.teacher = 40, 40, "resnet-teacher-small"
        a.route_sites, a.patch = 2, 8
        a.teacher_epochs = a.student_epochs = a.gate_epochs = a.recover_epochs = a.epochs = 1
        a.temperatures, a.alphas, a.repeats, a.router_epochs = [3.0], [0.7], 5, 1
        a.workdir = a.workdir.with_name(a.workdir.name + "_quick")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    work = a.workdir
    data_dir = a.data or _data(work, a.per_site, a.test_images, a.size)
    if a.teacher_checkpoint:
        teacher = a.teacher_checkpoint
        a.size = read_meta(teacher).preprocess.size
    else:
        teacher_cfg = _cfg(
            data_dir,
            work / "teacher",
            a,
            student={"name": a.teacher},
            train={"epochs": a.teacher_epochs, "cache_teacher": False},
        )
        teacher = _train(teacher_cfg, "teacher")
    Log(f"teacher ready ({time.perf_counter() - t0:.0f} s)")
    result: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    }
    timings: dict[str, float] = {}
    for section in a.sections:
        s0 = time.perf_counter()
        if section == "heads":
            result["heads"] = heads_section(data_dir, work, a, teacher)
        elif section == "chain":
            result["chain"] = chain_section(data_dir, work, a, teacher)
        elif section == "routing":
            result["routing"] = routing_section(data_dir, work, a)
        timings[section] = time.perf_counter() - s0
        Log(f"{section} done ({timings[section]:.0f} s)")
    result["seconds"] = {**timings, "total": time.perf_counter() - t0}
    name = "compress_heads_quick" if a.quick else "compress_heads"
    write(name, json.loads(json.dumps(result)), table(result))


if __name__ == "__main__":
    main()
