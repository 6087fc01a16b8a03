"""The inference worker's cost (issue 18): a model run in a worker process (ONNX Runtime on the
CPU inside, standing in for JetPack's TensorRT) against the same model in the agent's process.

    python -m benchmarks.worker_overhead               # after `make demo`; ~4 min on 2 cores
    python -m benchmarks.worker_overhead --quick       # smoke-sized (CI)

Side by side in one run, for the demo student and a teacher-sized model (``agent_models``):

1. backend: ``WorkerBackend`` vs the in-process ``OrtBackend`` (one intra-op thread, the
   process pinned to one core that the worker inherits), batches 1, 8 and 16, timed in
   alternating rounds; images/s each, their ratio, and the worker's overhead per batch in us;
2. agent: ``fovea-agent serve`` with and without ``worker_python`` (pinned to core 1, the load
   generator on core 0), 16 clients of one-image KServe binary requests, alternating runs;
3. kill: the worker agent's worker SIGKILLed under that load: the statuses answered (503s, no
   500s) and the seconds until ``/v2/health/ready`` is 200 again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.agent_load import AGENT_CORE, GEN_CORE, prepare_agent, requests_for, start_agent
from benchmarks.agent_models import CACHE, export_dir
from benchmarks.loadgen import free_port, run_load
from benchmarks.report import write

BATCHES = (1, 8, 16)
MODELS = ("student", "teacher")
TARGET = 0.9
WORKER_CONFIG = f"worker_python: {sys.executable}\nworker_backends: [onnxruntime]\n"


def _rate(backend: Any, x: np.ndarray, seconds: float) -> float:
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        backend.infer(x)
        runs += 1
    return runs * len(x) / elapsed


def backend_overhead(export: Path, rounds: int, seconds: float) -> dict[str, Any]:
    """In-process vs worker images/s per batch (alternating rounds, medians), pinned to one core."""
    from edge_agent.runtime import WorkerBackend, WorkerSettings, create_backend

    report = json.loads((export / "export.json").read_text())
    size, model = int(report["preprocess"]["size"]), export / "model.fp32.onnx"
    outputs = {"grade_logits": [5], "gradable_logit": [1]}
    load = {
        "kind": "onnxruntime",
        "model": str(model),
        "threads": 1,
        "input": "images",
        "providers": [["CPUExecutionProvider", {}]],
        "outputs": outputs,
        "max_batch": 16,
    }
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {AGENT_CORE})  # the worker inherits the core
    local = create_backend("onnxruntime", model, "fp32", image_size=size, threads=1)
    worker = WorkerBackend(
        model, "fp32", image_size=size, kind="onnxruntime",
        settings=WorkerSettings(sys.executable, ("onnxruntime",)), load=lambda hello: load,
    )  # fmt: skip
    rows = {}
    try:
        for batch in BATCHES:
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size), np.float32)
            for b in (local, worker):
                _rate(b, x, 0.2)  # warm-up
            pairs = [(_rate(local, x, seconds), _rate(worker, x, seconds)) for _ in range(rounds)]
            inproc, hosted = (float(np.median(v)) for v in zip(*pairs, strict=True))
            rows[str(batch)] = {
                "in_process_img_s": round(inproc, 1),
                "worker_img_s": round(hosted, 1),
                "ratio": round(hosted / inproc, 3),
                "overhead_us_per_batch": round(1e6 * batch * (1 / hosted - 1 / inproc), 1),
            }
    finally:
        worker.close()
        local.close()
        os.sched_setaffinity(0, before)
    return rows


def agent_throughput(export: Path, seconds: float, runs: int) -> dict[str, Any]:
    """Binary img/s of the agent in process vs with the worker (16 clients): both agents
    started (idle, the same core), their load runs alternating."""
    scratch = Path(tempfile.mkdtemp(prefix="worker-", dir=CACHE.resolve()))
    procs = []
    try:
        targets = {}
        for mode, config in (("in_process", ""), ("worker", WORKER_CONFIG)):
            agent = prepare_agent(export, scratch / mode, config)
            name = json.loads((agent.root / "current/manifest.json").read_text())["name"]
            port = free_port()
            proc, _ = start_agent(agent.root, port)
            procs.append(proc)
            targets[mode] = (port, requests_for(agent, name)["binary"])
        rates: dict[str, list[float]] = {mode: [] for mode in targets}
        for _ in range(runs):
            for mode, (port, request) in targets.items():
                rates[mode].append(run_load(port, request, seconds=seconds, core=GEN_CORE).rate)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    a, b = (float(np.median(rates[mode])) for mode in ("in_process", "worker"))
    return {
        "in_process_img_s": round(a, 1),
        "worker_img_s": round(b, 1),
        "ratio": round(b / a, 3),
        "runs": {mode: [round(r) for r in values] for mode, values in rates.items()},
    }


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def kill_under_load(export: Path, seconds: float) -> dict[str, Any]:
    """Statuses answered while the worker is killed mid-load, and seconds until ready again."""
    import psutil

    scratch = Path(tempfile.mkdtemp(prefix="worker-kill-", dir=CACHE.resolve()))
    try:
        agent = prepare_agent(export, scratch / "root", WORKER_CONFIG)
        name = json.loads((agent.root / "current/manifest.json").read_text())["name"]
        request = requests_for(agent, name)["binary"]
        port = free_port()
        proc, _ = start_agent(agent.root, port)
        recovered: list[float] = []

        def kill() -> None:
            time.sleep(1.0 + seconds / 3)  # the load's warm-up, then a third of the window
            (child,) = psutil.Process(proc.pid).children()
            os.kill(child.pid, signal.SIGKILL)
            t0 = time.perf_counter()
            time.sleep(0.05)
            while not _ready(port) and time.perf_counter() - t0 < 30:
                time.sleep(0.02)
            recovered.append(time.perf_counter() - t0)

        killer = threading.Thread(target=kill)
        killer.start()
        try:
            result = run_load(port, request, seconds=seconds, core=GEN_CORE)
        finally:
            killer.join()
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    statuses = Counter({int(k): v for k, v in result.statuses.items()})
    return {"statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors_500": statuses[500], "back_in_s": round(recovered[0], 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse flags, measure, write results/worker_overhead[_quick].{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".fovea/demo"), help="demo workdir")
    parser.add_argument("--seconds", type=float, default=1.0, help="per backend timing round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating backend rounds")
    parser.add_argument("--duration", type=float, default=15.0, help="per agent load run")
    parser.add_argument("--runs", type=int, default=2, help="agent load runs per mode")
    parser.add_argument("--quick", action="store_true", help="short phases (CI smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.duration, args.runs = 0.1, 1, 2.0, 1
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("this benchmark needs two cores (load generator on 0, agent on 1)")
    CACHE.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for model in MODELS[:1] if args.quick else MODELS:
        export, source = export_dir(model, args.workdir, args.quick)
        results[model] = {
            "source": source,
            "backend": backend_overhead(export, args.rounds, args.seconds),
            "agent": agent_throughput(export, args.duration, args.runs),
        }
        print(f"{model}: {json.dumps(results[model])}", flush=True)
    student = export_dir("student", args.workdir, args.quick)[0]
    killed = kill_under_load(student, max(args.duration, 3.0))
    payload = {
        "settings": {"seconds": args.seconds, "rounds": args.rounds, "duration_s": args.duration,
                     "runs": args.runs, "clients": 16, "quick": args.quick},
        "models": results,
        "kill_under_load": killed,
        "meets_target": all(r["agent"]["ratio"] >= TARGET for r in results.values())
        and killed["server_errors_500"] == 0 and killed["back_in_s"] < 10,
    }  # fmt: skip
    write("worker_overhead_quick" if args.quick else "worker_overhead", payload, _table(payload))
    return payload


def _table(payload: dict[str, Any]) -> list[list[str]]:
    models = payload["models"]
    table = [["", *models]]
    for batch in BATCHES:
        cell = "{in_process_img_s:.0f} / {worker_img_s:.0f} = {ratio:.2f}"
        cell += " (+{overhead_us_per_batch:.0f} us)"
        cells = [cell.format(**m["backend"][str(batch)]) for m in models.values()]
        table.append([f"backend img/s, batch {batch}: in process / worker", *cells])
    table.append(
        [f"agent binary img/s, 16 clients: in process / worker (target >= {TARGET})"]
        + ["{in_process_img_s:.0f} / {worker_img_s:.0f} = {ratio:.2f}".format(**m["agent"])
           for m in models.values()]
    )  # fmt: skip
    killed = payload["kill_under_load"]
    blank = [""] * (len(models) - 1)
    table.append(["worker killed under load: statuses", json.dumps(killed["statuses"]), *blank])
    table.append(["ready again after the kill (target < 10 s)", f"{killed['back_in_s']} s", *blank])
    return table


if __name__ == "__main__":
    main()
