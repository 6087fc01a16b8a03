"""Edge agent acceptance (issue 4): the agent under load beside a raw ONNX Runtime session.

    python -m benchmarks.agent_load                     # after `make demo`; ~5 min on 2 cores
    python -m benchmarks.agent_load --workdir /elsewhere/.fovea/demo --duration 60
    python -m benchmarks.agent_load --quick             # smoke-sized (CI)

For the demo student, a teacher-sized model and a clinical-size student (timm's
MobileNetV3-Large at 384 px, exported in the timm venv; left out under ``--quick``), in one run:
the raw session's best batched throughput (batches 1..32, the file and precision the agent
chose, one intra-op thread, pinned to core 1); ``fovea-agent serve`` on a fresh device root
where the signed bundle was installed (pinned to core 1, one ORT thread): cold start and
resident memory; then a load generator pinned to core 0 (asyncio, 16 keep-alive connections, one
image per request) against KServe binary tensors (``--duration`` s, counting failures), JSON
tensors and JPEG ``/v1/screen`` (``--window`` s each), and open-loop paced binary requests at
half the measured peak for p50/p99 latency.

Export directories come from ``--workdir`` (the demo's ``student/export``; the demo teacher's
checkpoint is exported once into ``.fovea/bench/agent_load``); what is missing is built there
from untrained ``resnet-student`` / ``resnet-teacher`` / ``timm:mobilenetv3_large_100`` nets
(speed does not depend on weights).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.agent_models import CACHE, MODELS, TARGETS, export_dir
from benchmarks.loadgen import free_port, generator_capacity, http_request, run_load
from benchmarks.report import write

RAW_BATCHES = (1, 2, 4, 8, 16, 32)
GEN_CORE, AGENT_CORE = 0, 1


@dataclass
class Agent:
    """A device root with the bundle installed, and a user who may infer and screen."""

    root: Path
    token: str
    model_file: Path
    precision: str
    size: int


def _cli(*args: str | Path) -> str:
    exe = Path(sys.executable).with_name("fovea-agent")
    done = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fovea-agent {' '.join(map(str, args))} failed: {done.stderr}")
    return done.stdout


def prepare_agent(export: Path, root: Path, config: str = "") -> Agent:
    """Sign ``export`` as a bundle, install it into a fresh ``root`` (``config``: more lines
    of its agent.yaml), add a technician."""
    from deploy.bundle import build_bundle
    from deploy.keys import generate_keypair
    from edge_agent.install import DeviceRoot

    keys = root.parent / "keys"
    if not (keys / "bench.key").is_file():
        generate_keypair(keys, "bench")
    device = DeviceRoot(root).ensure()
    shutil.copy(keys / "bench.pub", device.keys.trusted / "bench.pub")
    # 16 clients screen at once: room for them all, or the image pool's admission (2 workers
    # + 8 queued by default) answers the rest 503, which measures the guard, not the agent
    (root / "agent.yaml").write_text(f"threads: 1\nlog_level: warning\nscreen_queue: 16\n{config}")
    bundle = build_bundle(export, root.parent / "bundle.tar", 1, keys / "bench.key")
    _cli("install", bundle, "--root", root)
    token = _cli("users", "add", "bench", "--root", root, "--role", "technician").strip()
    (record,) = device.engines.glob("selection-*.json")
    chosen = json.loads(record.read_text())["chosen"]
    manifest = json.loads((device.current / "manifest.json").read_text())
    file = manifest["precisions"][chosen["precision"]]["file"]
    size = int(manifest["preprocess"]["size"])
    return Agent(root, token, device.current.resolve() / file, chosen["precision"], size)


# ----------------------------------------------------------------------------- raw session


def raw_throughput(model_file: Path, size: int, seconds: float) -> dict[int, float]:
    """Images/s of a bare ORT session (one thread, pinned to the agent's core) per batch."""
    import onnxruntime as ort

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {AGENT_CORE})
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        rates: dict[int, float] = {}
        for batch in RAW_BATCHES:
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size), np.float32)
            for _ in range(3):
                session.run(None, {"images": x})
            runs, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                session.run(None, {"images": x})
                runs += 1
            rates[batch] = runs * batch / elapsed
        return rates
    finally:
        os.sched_setaffinity(0, before)


def requests_for(agent: Agent, name: str) -> dict[str, bytes]:
    """One request per path: KServe binary tensors, KServe JSON tensors, JPEG screening."""
    from PIL import Image

    from models.synth import generate, get_site

    x = np.random.default_rng(0).standard_normal((1, 3, agent.size, agent.size), np.float32)
    infer = f"/v2/models/{name}/infer"
    outs = [
        {"name": o, "parameters": {"binary_data": True}} for o in ("grade_logits", "gradable_logit")
    ]
    tensor = {"name": "images", "shape": list(x.shape), "datatype": "FP32"}
    header = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}], "outputs": outs}
    ).encode()
    as_json = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    jpeg = io.BytesIO()
    image = generate(get_site("site-e"), 1, size=256, seed=1).images[0]
    Image.fromarray(image).save(jpeg, "JPEG", quality=90)
    boundary = "fovea-bench-boundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="eye.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {
        "binary": http_request(
            infer,
            header + x.tobytes(),
            "application/octet-stream",
            agent.token,
            f"Inference-Header-Content-Length: {len(header)}\r\n",
        ),
        "json": http_request(infer, as_json, "application/json", agent.token),
        "jpeg": http_request(
            "/v1/screen", form, f"multipart/form-data; boundary={boundary}", agent.token
        ),
    }


# ----------------------------------------------------------------------------- processes


def _pin_agent_core() -> None:
    os.sched_setaffinity(0, {AGENT_CORE})


def start_agent(root: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """``fovea-agent serve`` pinned to core 1; the process and its seconds to ready."""
    exe = Path(sys.executable).with_name("fovea-agent")
    args = [str(exe), "serve", "--root", str(root), "--port", str(port), "--threads", "1"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, preexec_fn=_pin_agent_core, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    while time.perf_counter() - start < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"fovea-agent serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return proc, time.perf_counter() - start
        except OSError:
            time.sleep(0.01)
    proc.kill()
    raise RuntimeError("fovea-agent serve was not ready within 120 s")


# ----------------------------------------------------------------------------- one model


def bench_model(model: str, export: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything for one model: raw session, cold start, memory, the load phases."""
    import psutil

    scratch = Path(tempfile.mkdtemp(prefix=f"{model}-", dir=CACHE.resolve()))
    try:
        agent = prepare_agent(export, scratch / "root")
        name = json.loads((agent.root / "current/manifest.json").read_text())["name"]
        raw = raw_throughput(agent.model_file, agent.size, args.raw_seconds)
        best = max(raw, key=lambda b: raw[b])
        requests = requests_for(agent, name)
        port = free_port()
        proc, cold = start_agent(agent.root, port)
        try:
            rss_ready = psutil.Process(proc.pid).memory_info().rss
            phases = {
                "binary": run_load(port, requests["binary"], seconds=args.duration, core=GEN_CORE)
            }
            print(f"{model} binary: {phases['binary'].summary()}", flush=True)
            for path in ("json", "jpeg"):
                phases[path] = run_load(port, requests[path], seconds=args.window, core=GEN_CORE)
                print(f"{model} {path}: {phases[path].summary()}", flush=True)
            half = phases["binary"].rate / 2
            paced = run_load(
                port, requests["binary"], seconds=args.window, conns=32, rate=half, core=GEN_CORE
            )
            rss_loaded = psutil.Process(proc.pid).memory_info().rss
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = phases["binary"].rate / raw[best]
    return {
        "model_file": agent.model_file.name,
        "precision": agent.precision,
        "raw_img_s": {str(b): round(r, 1) for b, r in raw.items()},
        "raw_best": {"batch": best, "img_s": round(raw[best], 1)},
        "cold_start_s": round(cold, 3),
        "rss_mib_ready": round(rss_ready / 2**20, 1),
        "rss_mib_after_load": round(rss_loaded / 2**20, 1),
        "load": {k: v.summary() for k, v in phases.items()},
        "half_load": {"target_rate": round(half, 1), **paced.summary()},
        "ratio_binary_vs_raw": round(ratio, 3),
        "target": TARGETS[model],
        "meets_target": ratio >= TARGETS[model],
        "failed_requests": sum(v.failed for v in phases.values()) + paced.failed,
    }


def _row(label: str, models: dict[str, dict[str, Any]], fmt: str) -> list[str]:
    return [label, *(fmt.format(**m) for m in models.values())]


def _table(models: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        ["", *models],
        _row("precision (agent's choice)", models, "{precision}"),
        _row("raw ORT best img/s (batch)", models, "{raw_best[img_s]:.0f} ({raw_best[batch]})"),
        _row("agent binary img/s, 16 clients", models, "{load[binary][requests_per_s]:.0f}"),
        _row("agent / raw (target)", models, "{ratio_binary_vs_raw:.2f} (>= {target:.2f})"),
        _row("agent JSON img/s", models, "{load[json][requests_per_s]:.0f}"),
        _row("agent JPEG /v1/screen img/s", models, "{load[jpeg][requests_per_s]:.0f}"),
        _row("p50 / p99 ms at half peak", models, "{half_load[p50_ms]} / {half_load[p99_ms]}"),
        _row("cold start s", models, "{cold_start_s:.2f}"),
        _row("RSS MiB ready / after load", models, "{rss_mib_ready} / {rss_mib_after_load}"),
        _row("failed requests", models, "{failed_requests}"),
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse flags, run the models, write results/agent_load[_quick].{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".fovea/demo"), help="demo workdir")
    parser.add_argument("--duration", type=float, default=60.0, help="binary load run, seconds")
    parser.add_argument("--window", type=float, default=10.0, help="other load phases, seconds")
    parser.add_argument("--raw-seconds", type=float, default=1.5, help="per raw batch size")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--quick", action="store_true", help="short phases (CI smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.window, args.raw_seconds = 2.0, 1.0, 0.2
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("this benchmark needs two cores (load generator on 0, agent on 1)")
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.quick:  # no timm export in the smoke run
        args.models = [m for m in args.models if MODELS[m].python is None]
    sources = {m: export_dir(m, args.workdir, args.quick) for m in args.models}
    results = {m: bench_model(m, sources[m][0], args) for m in args.models}
    probe = b"\0" * (3 * 64 * 64 * 4 + 300)  # a binary-tensor request's size at 64 px
    capacity = generator_capacity(
        http_request("/v2/models/x/infer", probe, "application/octet-stream", "t"), args.window
    )
    payload = {
        "settings": {
            "duration_s": args.duration,
            "window_s": args.window,
            "clients": 16,
            "raw_batches": list(RAW_BATCHES),
            "cores": {"generator": GEN_CORE, "agent_and_raw": AGENT_CORE},
            "quick": args.quick,
        },
        "sources": {m: s for m, (_, s) in sources.items()},
        "generator_max_req_s": round(capacity, 1),
        "models": results,
        "failed_requests": sum(r["failed_requests"] for r in results.values()),
    }
    blank = [""] * (len(results) - 1)
    table = [
        *_table(results),
        ["load generator max req/s, no-op server", f"{capacity:.0f}", *blank],
    ]
    write("agent_load_quick" if args.quick else "agent_load", payload, table)
    return payload


if __name__ == "__main__":
    main()
