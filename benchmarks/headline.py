"""The headline comparisons of a suite run: one row per comparison, from the merged results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["headline_rows", "machine_line", "markdown_table"]

Row = list[str]


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _synth(r: dict[str, Any]) -> list[Row]:
    seconds = list((r.get("seconds") or {}).values())
    if not seconds:
        return []
    what = f"synthetic generator, {r.get('n')} images at {r.get('size')} px, one thread"
    return [[what, f"{min(seconds):.1f}-{max(seconds):.1f} s per site"]]


def _export(r: dict[str, Any]) -> list[Row]:
    rows = []
    for name, m in (r.get("rows") or {}).items():
        acc, b1, tput = m.get("accuracy"), m.get("latency_ms_batch1"), m.get("throughput_img_s")
        if b1 is None or tput is None:
            continue
        size = f", {m['size_bytes'] / 1e3:,.0f} kB" if m.get("size_bytes") else ""
        accuracy = f"accuracy {acc:.2f}%, " if isinstance(acc, int | float) else ""
        ratio = m.get("throughput_ratio_vs_first")
        vs = f" ({ratio:.1f}x the teacher)" if ratio and ratio != 1.0 else ""
        rows.append(
            [
                f"{name}",
                f"{accuracy}{b1:.2f} ms at batch 1, {tput:,.0f} img/s at batch "
                f"{m.get('throughput_batch', 32)}{vs}{size}",
            ]
        )
    return rows


def _distill(r: dict[str, Any]) -> list[Row]:
    rows = []
    ratios = [v.get("accuracy_ratio") for v in (r.get("student_vs_teacher") or {}).values()]
    ratios = [x for x in ratios if isinstance(x, int | float)]
    if ratios:
        rows.append(
            [
                "distilled student accuracy / teacher (unseen site, per seed)",
                f"{min(ratios):.3f}-{max(ratios):.3f}",
            ]
        )
    acc = _get(r, "distilled_minus_scratch", "over_seeds", "accuracy")
    if acc:
        rows.append(
            [
                "distilled minus from-scratch student, accuracy",
                f"{100 * acc['mean']:+.2f} points [{100 * acc['low']:+.2f}, "
                f"{100 * acc['high']:+.2f}]",
            ]
        )
    mon = r.get("monitors")
    if mon:
        rows.append(
            [
                "monitors on / off, epoch time",
                f"{mon.get('epoch_time_ratio_on_off', float('nan')):.3f} (monitors "
                f"{100 * mon.get('share_of_epoch', float('nan')):.1f}% of an epoch)",
            ]
        )
    return rows


def _agent(r: dict[str, Any]) -> list[Row]:
    rows = []
    for name, m in (r.get("models") or {}).items():
        raw, ratio = _get(m, "raw_best", "img_s"), m.get("ratio_binary_vs_raw")
        served = _get(m, "load", "binary", "requests_per_s")
        if raw is None or ratio is None:
            continue
        rows.append(
            [
                f"agent end to end vs raw ONNX Runtime session ({name})",
                f"{served or 0:,.0f} vs {raw:,.0f} img/s ({ratio:.2f})",
            ]
        )
    return rows


def _agent_abuse(r: dict[str, Any]) -> list[Row]:
    worst = r.get("worst") or {}
    if "health_p99_ms" not in worst:
        return []
    return [
        [
            "agent under four attacks beside a screening load (unauthenticated bodies, 1,100 "
            "slow connections at 1,024 files, gzip bodies, 24 MP PNGs): worst health p99, load "
            "success, peak / settled RSS over idle",
            f"{worst['health_p99_ms']:.0f} ms (target < 100), {worst['normal_ok']:.1%}, "
            f"+{worst['peak_over_idle_mib']:.0f} / +{r.get('settled_over_idle_mib', 0):.0f} MiB",
        ]
    ]


def _worker_overhead(r: dict[str, Any]) -> list[Row]:
    models, killed = r.get("models") or {}, r.get("kill_under_load") or {}
    if not models or not killed:
        return []
    ratios = ", ".join(
        f"{name} {m['agent']['worker_img_s']:,.0f} vs {m['agent']['in_process_img_s']:,.0f} "
        f"img/s ({m['agent']['ratio']:.2f}; +{m['backend']['1']['overhead_us_per_batch']:.0f} us)"
        for name, m in models.items()
    )
    return [
        [
            "agent with the inference worker (ONNX Runtime inside) vs in process, 16 clients "
            "(target >= 0.9; the worker's overhead per batch of 1)",
            ratios,
        ],
        [
            "inference worker SIGKILLed under load: answers, back ready",
            ", ".join(f"{n:,} x {code}" for code, n in killed["statuses"].items())
            + f" ({killed['server_errors_500']} x 500); ready again in {killed['back_in_s']} s "
            "(target < 10)",
        ],
    ]


def _screen_camera(r: dict[str, Any]) -> list[Row]:
    p50, agree = r.get("p50_ms") or {}, _get(r, "agreement", "agree") or {}
    if not p50.get("screen_one_client") or not p50.get("dct_decode_resize"):
        return []
    rows = [
        [
            "`/v1/screen`, one 3000 x 2250 JPEG, one client (p50) vs DCT-scaled decode + resize",
            f"{p50['screen_one_client']:.1f} vs {p50['dct_decode_resize']:.1f} ms "
            f"({r.get('ratio_screen_vs_dct', 0):.2f}x; full decode + resize "
            f"{p50.get('full_decode_resize', 0):.0f} ms)",
        ]
    ]
    if agree:
        n = _get(r, "agreement", "images")
        rows.append(
            [
                f"reduced vs full decode on {n} camera images: referral / quality / grade",
                " / ".join(f"{100 * agree[k]:.1f}%" for k in ("referral", "quality", "grade")),
            ]
        )
    return rows


def _data_scale(r: dict[str, Any]) -> list[Row]:
    prep, limit = r.get("prepare") or {}, r.get("decode_limit") or {}
    shards, memory = r.get("epoch_sharded") or {}, r.get("epoch_in_memory") or {}
    if not prep or not shards:
        return []
    cfg = r.get("config") or {}
    return [
        [
            f"`fovea data prepare`, {prep.get('images'):,} camera JPEGs at {cfg.get('size')} px, "
            "vs one thread's DCT-scaled decode",
            f"{prep['images_per_s']:.1f} vs {limit.get('reduced', 0):.1f} img/s "
            f"(full decode: {limit.get('full', 0):.1f})",
        ],
        [
            "one distillation epoch from the shards vs in memory: peak PSS of the process tree",
            f"{shards['peak_pss_mib']:,.0f} vs {memory.get('peak_pss_mib', 0):,.0f} MiB "
            f"(budget {r.get('budget_mib', 2048):,})",
        ],
    ]


def _deploy(r: dict[str, Any]) -> list[Row]:
    flash, ok = r.get("flash") or {}, r.get("rollout_ok") or {}
    if not flash:
        return []
    return [
        [
            f"flash {r.get('devices')} devices in parallel; canary rollout",
            f"{flash.get('seconds', 0):.1f} s; rollout {ok.get('status', '?')} in "
            f"{ok.get('seconds', 0):.1f} s",
        ]
    ]


def _federation(r: dict[str, Any]) -> list[Row]:
    rows = []
    for codec, m in (r.get("codecs") or {}).items():
        rows.append(
            [
                f"federated bytes per client per round, codec {codec}",
                f"{m.get('bytes_per_client_round', 0):,.0f}",
            ]
        )
    target = r.get("rounds_to_target") or {}
    if "fedavg" in target:
        rows.append(
            [
                f"rounds to mean accuracy {target.get('target_mean_accuracy', 0):.1f}%",
                f"FedAvg {target.get('fedavg')}, FedProx {target.get('fedprox')}",
            ]
        )
    return rows


def _gpu(r: dict[str, Any]) -> list[Row]:
    if r.get("skipped"):
        return [
            [
                "GPU: teacher and student, fp32 vs fp16 (PyTorch CUDA, ONNX Runtime CUDA)",
                str(r["skipped"]),
            ]
        ]
    rows = []
    for name, m in (r.get("rows") or {}).items():
        if m.get("skipped"):
            rows.append([f"GPU {name}", str(m["skipped"])])
        else:
            rows.append(
                [
                    f"GPU {name}",
                    f"{m['latency_ms_batch1']:.2f} ms at batch 1, "
                    f"{m['throughput_img_s']:,.0f} img/s at batch {m['batch']}",
                ]
            )
    return rows


def _compress(r: dict[str, Any]) -> list[Row]:
    ratio, retention = r.get("parameter_ratio"), r.get("accuracy_retention")
    if ratio is None or retention is None:
        return []
    i8 = r.get("int8") or {}
    sensitivity = f"{r.get('referable_sensitivity_difference_points', float('nan')):+.1f} points"
    interval = r.get("referable_sensitivity_difference_interval_points")
    if interval:
        sensitivity += " [{:+.1f}, {:+.1f}]".format(*interval)
    rows = [
        [
            "compressed student: teacher's parameters; accuracy kept; referable sensitivity",
            f"1/{1 / ratio:.1f}; {100 * retention:.1f}%; {sensitivity}",
        ]
    ]
    if "qat_int8_heldout_accuracy" in i8:
        rows.append(
            [
                "QAT INT8 vs post-training INT8, held-out accuracy",
                f"{i8['qat_int8_heldout_accuracy']:.1f}% vs {i8['ptq_int8_heldout_accuracy']:.1f}%",
            ]
        )
    return rows


def _compress_heads(r: dict[str, Any]) -> list[Row]:
    rows = []
    heads = r.get("heads")
    if heads:
        lat = heads["latency"]
        key = "onnxruntime_b32_ms"
        rows.append(
            [
                "ViT attention heads pruned to 0.6 and recovered, minus unpruned trained as long; "
                "latency",
                f"{-heads['loss_points_vs_control']['test']:+.1f} points (unseen site); "
                f"{lat['unpruned'][key]:.1f} -> {lat['pruned'][key]:.1f} ms (ORT, batch 32)",
            ]
        )
    chain = r.get("chain")
    if chain:
        rows.append(
            [
                f"teacher-assistant chain minus direct distillation "
                f"({chain['ratio']:.0f}x smaller)",
                f"{chain['chain_minus_direct_points']:+.1f} points",
            ]
        )
    routing = r.get("routing")
    if routing:
        rows.append(
            [
                "routed minus averaged multi-teacher distillation",
                f"{routing['routed_minus_averaged_points']:+.1f} points (validation)",
            ]
        )
    return rows


def _federation_scale(r: dict[str, Any]) -> list[Row]:
    sites, pss = (r.get("config") or {}).get("sites"), r.get("peak_pss_mib")
    if sites is None or pss is None:
        return []
    rounds = [x.get("seconds") for x in r.get("rounds") or [] if x.get("round", 0) >= 1]
    per_round = ", ".join(f"{x:.0f}" for x in rounds if isinstance(x, int | float))
    return [
        [
            f"federated rounds with {sites} simulated sites on this machine",
            f"{per_round} s per round; peak {pss / 1024:.2f} GiB PSS",
        ]
    ]


def _clinical(r: dict[str, Any]) -> list[Row]:
    if r.get("skipped"):
        return [["clinical scale: MobileNetV3-L student vs ResNet-50 teacher", str(r["skipped"])]]
    a, scale = r["acceptance"], r["scale"]
    what = (
        f"clinical scale: MobileNetV3-L student ({scale['student_size']} px, ORT) vs ResNet-50 "
        f"teacher ({scale['teacher_size']} px, PyTorch)"
    )
    verdict = "met" if a["passed"] else "NOT met"
    busy = "; cores busy: unreliable" if a.get("machine_oversubscribed") else ""
    return [
        [
            what,
            f"{a['throughput_ratio']:.1f}x throughput at batch {scale['batch']} "
            f"({a['student_best_precision']}; {a['target_throughput_ratio']:.0f}x {verdict}), "
            f"{a['latency_ratio']:.1f}x batch-1 latency; agent chose {a['agent_chose']}{busy}",
        ]
    ]


_EXTRACTORS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "synth_speed": _synth,
    "export_acceptance": _export,
    "distill_acceptance": _distill,
    "agent_load": _agent,
    "screen_camera": _screen_camera,
    "agent_abuse": _agent_abuse,
    "worker_overhead": _worker_overhead,
    "data_scale": _data_scale,
    "deploy_acceptance": _deploy,
    "federation_acceptance": _federation,
    "gpu": _gpu,
    "compress_acceptance": _compress,
    "compress_heads": _compress_heads,
    "federation_scale": _federation_scale,
    "clinical_models": _clinical,
}


def headline_rows(latest: dict[str, Any]) -> list[Row]:
    """[comparison, result, benchmark] for every benchmark in a merged ``latest.json``."""
    rows: list[Row] = []
    for name, result in (latest.get("benchmarks") or {}).items():
        base = name.removesuffix("_quick")
        extract = _EXTRACTORS.get(base)
        try:
            found = extract(result) if extract else []
        except (KeyError, TypeError, ValueError):
            found = []
        if not found:
            found = [[f"{base}: see benchmarks/results/{name}.md", "(no headline)"]]
        rows += [[*row, name] for row in found]
    for name, error in (latest.get("failed") or {}).items():
        rows.append([name, f"FAILED: {error}", name])
    return rows


def machine_line(machine: dict[str, Any]) -> str:
    """One sentence naming the machine: CPU model, cores, GPU or none, date."""
    gpu = machine.get("gpu") or "no GPU"
    return (
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {gpu}; "
        f"run {machine.get('date', '?')}"
    )


def markdown_table(latest: dict[str, Any]) -> str:
    """The headline table in Markdown, with its machine line above it."""
    lines = [
        f"Machine: {machine_line(latest.get('machine') or {})}"
        + (" (quick, smoke-sized run)" if latest.get("quick") else ""),
        "",
        "| comparison | result | benchmark |",
        "|---|---|---|",
    ]
    for comparison, result, name in headline_rows(latest):
        lines.append(f"| {comparison} | {result} | `{name}` |")
    elsewhere = {
        n: r["machine"]
        for n, r in (latest.get("benchmarks") or {}).items()
        if isinstance(r.get("machine"), dict)
        and (r["machine"].get("cpu"), r["machine"].get("gpu"), r["machine"].get("cores"))
        != tuple((latest.get("machine") or {}).get(k) for k in ("cpu", "gpu", "cores"))
    }
    reused = set(latest.get("reused") or [])
    for name, m in elsewhere.items():
        if name not in reused:
            lines.append(f"\n`{name}` ran on another machine: {machine_line(m)}.")
    for name in sorted(reused):
        m = (latest.get("benchmarks") or {}).get(name, {}).get("machine") or {}
        lines.append(f"\n`{name}` is reused from an earlier run: {machine_line(m)}.")
    return "\n".join(lines) + "\n"
