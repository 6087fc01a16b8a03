"""The agent under abuse (issue 17): health, memory and a normal screening load, in one run.

    python -m benchmarks.agent_abuse             # after `make demo`; ~3 min on 2 cores
    python -m benchmarks.agent_abuse --quick     # smoke-sized (CI)

A real ``fovea-agent serve`` (open-file limit 1,024, pinned to core 1) on a device root with
the demo student's signed bundle. Throughout, two clients screen camera-size JPEGs and a
probe opens a new connection to ``/v2/health/live`` every 50 ms. After an idle baseline,
four attacks run one after another, each for ``--seconds``: (1) unauthenticated 32 MiB
screening bodies, 40 connections sending as fast as they can; (2) 1,100 slow connections
that trickle header bytes; (3) gzip infer bodies inflating far past the model's limit, 32 at
a time, with a technician's token; (4) 24-megapixel PNGs of ~100 kB, 8 at a time. Reported
per phase: the probe's p99, the normal load's success rate and the agent's peak RSS against
idle; then its RSS 30 s after the last attack.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.agent_load import GEN_CORE, export_dir, prepare_agent, start_agent
from benchmarks.loadgen import free_port
from benchmarks.report import write
from benchmarks.screen_camera import BOUNDARY, _form, camera_files

CACHE = Path(".fovea/bench/agent_abuse")
TARGETS = {"health_p99_ms": 100.0, "peak_over_idle_mib": 512.0, "settled_over_idle_mib": 64.0}
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def _request(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> int:
    """Send one request on a new connection; the reply's status (0: no reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # refused while sending: the reply may be there
            sock.sendall(head + body)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return 0
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def _head(method: str, path: str, length: int, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


class Running:
    """Threads looping ``work`` until stopped."""

    def __init__(self, work: Callable[[threading.Event], None], threads: int) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=work, args=(self.stop,)) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def normal_load(port: int, token: str, datas: list[bytes], tally: dict[str, int]) -> Running:
    """Two clients screening camera JPEGs over keep-alive connections."""
    import http.client

    def work(stop: threading.Event) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": FORM}
        i = 0
        while not stop.is_set():
            try:
                conn.request("POST", "/v1/screen", _form(datas[i % len(datas)]), headers)
                reply = conn.getresponse()
                reply.read()
                key = "ok" if reply.status == 200 else f"status {reply.status}"
                tally[key] = tally.get(key, 0) + 1
            except OSError as exc:
                tally[type(exc).__name__] = tally.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            i += 1
        conn.close()

    return Running(work, 2)


def _probe_loop(port: int, stop: Any, out: Any) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: agent\r\n\r\n"
    samples = []
    while not stop.is_set():
        start = time.perf_counter()
        try:
            ok = _request(port, head, timeout=5) == 200
        except OSError:
            ok = False
        samples.append((time.monotonic(), time.perf_counter() - start if ok else float("inf")))
        stop.wait(0.05)
    out.send(samples)


class HealthProbe:
    """A new connection to /v2/health/live every 50 ms from its own process (the attackers'
    threads would otherwise hold its GIL): (when, seconds; inf on failure)."""

    def __init__(self, port: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.stop = ctx.Event()
        self._out, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_probe_loop, args=(port, self.stop, child), daemon=True)
        self.process.start()

    def close(self) -> list[tuple[float, float]]:
        self.stop.set()
        samples: list[tuple[float, float]] = self._out.recv()
        self.process.join(10)
        return samples


def rss_sampler(pid: int, samples: list[tuple[float, int]]) -> Running:
    import psutil

    process = psutil.Process(pid)

    def work(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                samples.append((time.monotonic(), process.memory_info().rss))
            except psutil.Error:
                return
            stop.wait(0.1)

    return Running(work, 1)


# ----------------------------------------------------------------------------- attacks


def _repeated(port: int, head: bytes, body: bytes, *, threads: int, timeout: float = 30) -> Running:
    """``threads`` clients sending the same request on new connections until stopped."""

    def work(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                _request(port, head, body, timeout=timeout)
            except OSError:
                time.sleep(0.01)

    return Running(work, threads)


def unauthenticated_bodies(port: int, _: str) -> Running:
    head = _head("POST", "/v1/screen", 32 << 20, f"Content-Type: {FORM}\r\n")
    chunk = b"x" * (1 << 20)

    return _repeated(port, head, chunk, threads=40, timeout=10)


def slow_connections(port: int, _: str, count: int = 1100) -> Running:
    def work(stop: threading.Event) -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            while len(socks) < count and not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=2)
                    s.setblocking(False)
                    s.send(b"GET /v2/health/live HTTP/1.1\r\n")
                    socks.append(s)
                except OSError:
                    break
            alive = []
            for s in socks:  # a header byte now and then: never finished
                try:
                    s.send(b"X")
                    alive.append(s)
                except OSError:
                    s.close()
            socks = alive
            stop.wait(1.0)
        for s in socks:
            s.close()

    return Running(work, 1)


def compressed_bodies(port: int, token: str) -> Running:
    n = 4_000_000  # 20 MB of JSON from ~20 kB of gzip; the model's limit is a fifth of that
    start = json.dumps({"name": "images", "datatype": "FP32", "shape": [n + 1]})[:-1]
    body = gzip.compress(
        b'{"inputs": [' + start.encode() + b', "data": [' + b"0.0, " * n + b"0]}]}"
    )
    extra = (
        f"Authorization: Bearer {token}\r\nContent-Encoding: gzip\r\n"
        "Content-Type: application/json\r\n"
    )
    head = _head("POST", "/v2/models/fovea-student/infer", len(body), extra)

    return _repeated(port, head, body, threads=32)


def large_decodes(port: int, token: str) -> Running:
    image = Image.new("RGB", (5600, 4200), (90, 30, 10))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    png = buf.getvalue()
    form = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="e.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = _head(
        "POST",
        "/v1/screen",
        len(form),
        f"Authorization: Bearer {token}\r\nContent-Type: {FORM}\r\n",
    )

    return _repeated(port, head, form, threads=8, timeout=60)


ATTACKS = {
    "unauthenticated 32 MiB bodies x40": unauthenticated_bodies,
    "1,100 slow connections": slow_connections,
    "gzip infer bodies x32": compressed_bodies,
    "24 MP PNG decodes x8": large_decodes,
}


def _limit_files() -> None:
    os.sched_setaffinity(0, {1})
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def _p99_ms(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)


def run(workdir: Path, seconds: float, settle: float, quick: bool) -> dict[str, Any]:
    export, source = export_dir("student", workdir, quick)
    datas = [p.read_bytes() for p in camera_files(8 if quick else 40)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    scratch = Path(tempfile.mkdtemp(prefix="abuse-", dir=CACHE.resolve()))
    phases: dict[str, Any] = {}
    try:
        agent = prepare_agent(export, scratch / "root")
        port = free_port()
        proc, _ = start_agent_limited(agent.root, port)
        rss: list[tuple[float, int]] = []
        tally: dict[str, int] = {}
        sampler = rss_sampler(proc.pid, rss)
        load = normal_load(port, agent.token, datas, tally)

        def phase(name: str, attack: Callable[[int, str], Running] | None) -> None:
            start, before = time.monotonic(), dict(tally)
            probe = HealthProbe(port)
            running = attack(port, agent.token) if attack else None
            time.sleep(seconds)
            if running:
                running.close()
            probes = [s for t, s in probe.close() if t >= start]
            done = {k: tally.get(k, 0) - before.get(k, 0) for k in tally}
            total = sum(done.values())
            phases[name] = {
                "health_p99_ms": _p99_ms(probes),
                "health_failures": sum(s == float("inf") for s in probes),
                "normal_ok": round(done.get("ok", 0) / total, 4) if total else None,
                "normal_requests": total,
                "normal_errors": {k: v for k, v in done.items() if k != "ok" and v},
                "peak_rss_mib": round(max(r for t, r in rss if t >= start) / 2**20, 1),
            }
            print(f"  {name}: {phases[name]}", flush=True)

        phase("idle (normal load only)", None)
        idle = statistics.median(r for _, r in rss) / 2**20
        for name, attack in ATTACKS.items():
            phase(name, attack)
        load.close()
        time.sleep(settle)
        settled = statistics.median(r for t, r in rss[-20:]) / 2**20
        sampler.close()
        proc.terminate()
        proc.wait(30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "source": source,
        "idle_rss_mib": round(idle, 1),
        "settled_rss_mib": round(settled, 1),
        "phases": phases,
    }


def start_agent_limited(root: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """``fovea-agent serve`` with an open-file limit of 1,024 (soft and hard), on core 1."""
    import benchmarks.agent_load as load

    pin = load._pin_agent_core
    load._pin_agent_core = _limit_files
    try:
        return start_agent(root, port)
    finally:
        load._pin_agent_core = pin


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse flags, run the phases, write results/agent_abuse[_quick].{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".fovea/demo"), help="demo workdir")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--settle", type=float, default=30.0, help="after the last attack")
    parser.add_argument("--quick", action="store_true", help="short phases (CI smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.settle = 3.0, 3.0
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("this benchmark needs two cores (clients on 0, agent on 1)")
    CACHE.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {GEN_CORE})
    result = run(args.workdir, args.seconds, args.settle, args.quick)
    idle = result["idle_rss_mib"]
    rows = [["phase", "health p99 ms", "normal load ok", "peak RSS over idle MiB"]]
    worst = {"health_p99_ms": 0.0, "peak_over_idle_mib": 0.0, "normal_ok": 1.0}
    for name, p in result["phases"].items():
        over = round(p["peak_rss_mib"] - idle, 1)
        rows.append([name, f"{p['health_p99_ms']}", f"{(p['normal_ok'] or 0):.1%}", f"{over}"])
        worst["health_p99_ms"] = max(worst["health_p99_ms"], p["health_p99_ms"])
        worst["peak_over_idle_mib"] = max(worst["peak_over_idle_mib"], over)
        worst["normal_ok"] = min(worst["normal_ok"], p["normal_ok"] or 0.0)
    settled_over = round(result["settled_rss_mib"] - idle, 1)
    rows.append([f"{args.settle:g} s after", "", "", f"{settled_over}"])
    result.update(
        worst=worst,
        settled_over_idle_mib=settled_over,
        targets={**TARGETS, "normal_ok": 0.99},
        meets_targets=worst["health_p99_ms"] < TARGETS["health_p99_ms"]
        and worst["peak_over_idle_mib"] <= TARGETS["peak_over_idle_mib"]
        and settled_over <= TARGETS["settled_over_idle_mib"]
        and worst["normal_ok"] >= 0.99,
        settings={"seconds": args.seconds, "settle": args.settle, "quick": args.quick},
    )
    write("agent_abuse_quick" if args.quick else "agent_abuse", result, rows)
    return result


if __name__ == "__main__":
    main()
