"""Scale rehearsal (issue 6): the federation App under Flower's simulation runtime.

``python -m benchmarks.federation_scale [--sites 50] [--rounds 2] [--cases 24]`` starts a
simulation SuperLink (``flower-superlink --simulation``, Ray backend), runs the same ServerApp
and ClientApp ``flwr run`` runs against real devices, with ``--sites`` simulated sites (each a
small synthetic device root, prepared before the run by ``server.federation.prepare_sites``),
and reports each round's wall time and the peak memory (PSS and RSS summed over the
SuperLink's process tree, Ray's workers included) to
``benchmarks/results/federation_scale.{json,md}``.

Without ``--model`` a tiny untrained 32 px ResNet student stands in for the deployed model:
the rehearsal measures the federation's cost, not what it learns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.memory import MemorySampler

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAME = "federation_scale"


@dataclass(frozen=True)
class ScaleConfig:
    """One rehearsal: how many simulated sites, rounds and cases, and where it works."""

    sites: int = 50
    rounds: int = 2
    cases: int = 24
    workdir: Path = REPO / ".fovea" / "bench" / "federation-scale"
    model: Path | None = None
    cpus_per_site: float = 1.0
    timeout: float = 600.0

    def __post_init__(self) -> None:
        for key, value, low in (("sites", self.sites, 2), ("rounds", self.rounds, 1),
                                ("cases", self.cases, 8)):  # fmt: skip
            if value < low:
                raise ValueError(f"--{key} {value}: must be >= {low}")
        if self.cpus_per_site <= 0:
            raise ValueError(f"--cpus-per-site {self.cpus_per_site}: must be > 0")


def tiny_model(path: Path, size: int = 32) -> Path:
    """A small untrained ResNet student checkpoint at ``size`` px (the rehearsal's model)."""
    import torch

    from models import PreprocessSpec
    from models.nets import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet", {"width": 4, "depths": [1, 1, 1]})
    spec = PreprocessSpec(size=size)
    return save_checkpoint(model, path, name="scale-rehearsal", preprocess=spec)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else str(value)


def run_config(config: ScaleConfig, model: Path, run_dir: Path) -> dict[str, object]:
    """The run config of a rehearsal: every site trains and evaluates in every round."""
    return {
        "model": str(model), "run-dir": str(run_dir), "num-rounds": config.rounds,
        "strategy": "fedavg", "min-train-nodes": config.sites,
        "min-evaluate-nodes": config.sites, "min-available-nodes": config.sites,
        "round-timeout": config.timeout, "node-wait-timeout": 120.0, "local-epochs": 1,
        "lr": 0.01, "batch-size": 16, "min-cases": min(16, config.cases), "promote": False,
        "sim-dir": str(config.workdir / "sim-sites"), "sim-cases": config.cases,
    }  # fmt: skip


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, start_new_session=True)  # fmt: skip


def _stop(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=20)


def _end_leftovers(seen: dict[int, psutil.Process]) -> None:
    """SIGKILL processes of this rehearsal still alive (Ray workers that outlived the run);
    psutil refuses a pid that was reused by another process since it was seen."""
    for process in seen.values():
        with contextlib.suppress(psutil.Error):
            if process.is_running():
                process.kill()


def _wait_port(port: int, popen: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"flower-superlink exited; see {log}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"flower-superlink did not listen on {port} in {timeout:g} s; see {log}")


def _watch(run_dir: Path, popen: subprocess.Popen[bytes], deadline: float,
           log: Callable[[str], None]) -> None:  # fmt: skip
    """Wait for ``flwr run`` to end, printing each round as the registry records it."""
    from server.federation import Registry

    shown = -1
    while popen.poll() is None and time.monotonic() < deadline:
        time.sleep(1.0)
        db = run_dir / "registry.db"
        if db.is_file():
            with contextlib.suppress(Exception):
                for r in Registry(db).rounds():
                    if r.round > shown:
                        log(f"round {r.round}: {r.status}, {r.accepted}/{r.sampled} accepted, "
                            f"{r.ended - r.started:.1f} s")  # fmt: skip
                        shown = r.round
    if popen.poll() is None:
        _stop(popen)
        raise TimeoutError(f"the rehearsal did not end within {deadline:g} s")


def rehearse(config: ScaleConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one rehearsal; returns its timings and memory (see the module docstring)."""
    from server.federation import Registry, prepare_sites

    work = config.workdir
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run dir would be resumed
    work.mkdir(parents=True, exist_ok=True)
    model = config.model or tiny_model(work / "model" / "student.json")
    cached = len(list((work / "sim-sites").glob("*/site-*")))
    prepare_sites(model, work / "sim-sites", config.cases, config.sites, log)
    home = Path(tempfile.mkdtemp(prefix="fovea-flwr-home-"))  # outside the App: `flwr run .`
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n"
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "OMP_NUM_THREADS": "1",
        "PATH": os.pathsep.join([str(BIN), os.environ["PATH"]]),
    }
    link_log, run_log = work / "superlink.log", work / "run.log"
    for path in (link_log, run_log):
        path.unlink(missing_ok=True)
    started = time.time()
    link = _spawn([str(BIN / "flower-superlink"), "--insecure", "--simulation",
                   "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                   "--port", str(port)], link_log, env)  # fmt: skip
    sampler = MemorySampler([link.pid])
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        _wait_port(port, link, link_log, 60)
        run_arg = " ".join(f"{k}={_toml(v)}" for k, v in run_config(config, model, run_dir).items())
        federation = (f"num-supernodes={config.sites} "
                      f"client-resources-num-cpus={config.cpus_per_site:g}")  # fmt: skip
        log(f"{config.sites} simulated sites x {config.rounds} rounds; logs in {work}")
        flwr = _spawn([str(BIN / "flwr"), "run", str(REPO), "sim", "--stream", "--run-config",
                       run_arg, "--federation-config", federation], run_log, env)  # fmt: skip
        sampler.roots.append(flwr.pid)
        _watch(run_dir, flwr, time.monotonic() + config.timeout, log)
    finally:
        sampler.stop()
        thread.join()
        _stop(link)
        _end_leftovers(sampler.seen)
        shutil.rmtree(home, ignore_errors=True)
    ended = time.time()
    db = run_dir / "registry.db"
    if not db.is_file():
        raise RuntimeError(f"the ServerApp recorded nothing; see {run_log} and {link_log}")
    registry = Registry(db)
    status = str(registry.meta().get("status", "unknown"))
    rounds = []
    for r in registry.rounds():
        rounds.append({
            "round": r.round, "phase": "evaluate only" if r.round == 0 else "train + evaluate",
            "status": r.status, "seconds": round(r.ended - r.started, 2), "sampled": r.sampled,
            "replied": r.replied, "accepted": r.accepted,
            "train_loss": r.train_metrics.get("train-loss"),
            "eval_accuracy": r.eval_metrics.get("eval-accuracy"),
            **sampler.peak(r.started, r.ended),
        })  # fmt: skip
    first = min((r.started for r in registry.rounds()), default=ended)
    return {
        "config": {**asdict(config), "workdir": str(work), "model": str(model)},
        "status": status,
        "sites_cached_before": cached,
        "startup_seconds": round(first - started, 2),
        "total_seconds": round(ended - started, 2),
        "rounds": rounds,
        **sampler.peak(),
        "logs": {"superlink": str(link_log), "run": str(run_log)},
    }


def _table(result: dict[str, Any]) -> list[list[str]]:
    head = ["round", "phase", "status", "s", "accepted/sampled", "peak PSS MiB",
            "peak RSS MiB", "processes"]  # fmt: skip
    rows = [[str(r["round"]), r["phase"], r["status"], f"{r['seconds']:.1f}",
             f"{r['accepted']}/{r['sampled']}", f"{r['peak_pss_mib']:.0f}",
             f"{r['peak_rss_mib']:.0f}", str(r["peak_processes"])]
            for r in result["rounds"]]  # fmt: skip
    rows.append(["all", f"startup {result['startup_seconds']:.1f} s", result["status"],
                 f"{result['total_seconds']:.1f}", "", f"{result['peak_pss_mib']:.0f}",
                 f"{result['peak_rss_mib']:.0f}", str(result["peak_processes"])])  # fmt: skip
    return [head, *rows]


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, rehearse, write the report."""
    from benchmarks.report import write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=50, help="simulated sites (SuperNodes)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", type=int, default=24, help="reviewed cases per site")
    parser.add_argument("--model", type=Path, help="checkpoint .json (default: a tiny student)")
    parser.add_argument("--workdir", type=Path, default=ScaleConfig.workdir)
    parser.add_argument(
        "--cpus-per-site", type=float, default=1.0,
        help="Ray CPUs per simulated ClientApp (fewer run at once when higher)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    parser.add_argument("--quick", action="store_true", help="4 sites, 1 round (CI smoke size)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sites, args.rounds, args.cases = 4, 1, 8
    config = ScaleConfig(args.sites, args.rounds, args.cases, args.workdir.resolve(),
                         args.model, args.cpus_per_site, args.timeout)  # fmt: skip
    result = rehearse(config)
    write(NAME + ("_quick" if args.quick else ""), result, _table(result))
    if result["status"] != "finished":
        sys.exit(f"the rehearsal did not finish (status {result['status']!r}); see the logs")


if __name__ == "__main__":
    main()
