"""Deploy acceptance (issue 5): flash three local devices in parallel, then a canary rollout that
succeeds and one that is rolled back, each timed, in one run.

Devices are local device roots (LocalTransport) flashed by ``deploy.flash.flash`` with the
process supervisor, each serving a real ``fovea-agent`` on a 127.0.0.1 port. The failing rollout
is honest: the canary's agent.yaml pins fp16 and the new bundle ships no fp16 model, so the
restarted agent cannot serve; the fleet sees its health fail and rolls the canary back.

    python -m benchmarks.deploy_acceptance [--export DIR] [--soak 5] [--workdir W]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.report import write
from deploy import LocalTransport
from deploy.bundle import build_bundle
from deploy.flash import FlashPlan, FlashTarget, ProcessSupervisor, ServiceSpec, flash
from deploy.fleet import BundleChange, Device, Inventory, RolloutPlan, TransportSpec, rollout
from deploy.keys import generate_keypair


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_export(work: Path) -> Path:
    """A small real export (32 px model, one epoch), as the test suite makes it."""
    from server.distill import parse_config, run
    from server.export import ExportConfig, export
    from server.training import synthesise

    data = work / "data"
    synthesise(
        data,
        sites=["site-a", "site-b", "site-c", "site-d", "site-e"],
        per_site=160,
        size=32,
        seed=0,
    )
    cfg = parse_config(
        {
            "teacher": None,
            "student": {"name": "resnet", "config": {"width": 8, "depths": [1, 1, 1]}},
            "data": {"dir": str(data)},
            "train": {"epochs": 1, "batch_size": 32, "threads": 1},
            "monitor": {"enabled": False},
            "out": str(work / "run"),
            "bootstrap": 0,
        }
    )
    ckpt = run(cfg, name="student", log=lambda s: None).checkpoint
    settings = {
        "calibration_size": 64, "min_calibration": 16, "calibration_methods": ["MinMax"],
        "golden_size": 4, "validation_size": 48, "heldout_limit": 64, "sensitivity_samples": 16,
        "max_excluded": 2, "latency_runs": 1, "throughput_batch": 4, "threads": 1,
    }  # fmt: skip
    return export(ckpt.parent, work / "export", ExportConfig.model_validate(settings)).out


def bundles(export: Path, work: Path) -> tuple[Path, Path, Path, Path]:
    """Public key, and signed bundles v1, v2 and v3 (v3 ships no fp16 model)."""
    private, public = generate_keypair(work / "keys", "acceptance")
    v1 = build_bundle(export, work / "b" / "v1.tar", 1, private)
    v2 = build_bundle(export, work / "b" / "v2.tar", 2, private)
    no_fp16 = work / "export-no-fp16"
    shutil.copytree(export, no_fp16)
    (no_fp16 / "model.fp16.onnx").unlink()
    info = json.loads((no_fp16 / "export.json").read_text())
    del info["precisions"]["fp16"]
    (no_fp16 / "export.json").write_text(json.dumps(info))
    return public, v1, v2, build_bundle(no_fp16, work / "b" / "v3.tar", 3, private)


def _pin_fp16(root: Path) -> None:
    path = root / "agent.yaml"
    settings = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    path.write_text(yaml.safe_dump({**settings, "precision": "fp16"}))


def main(argv: list[str] | None = None) -> None:
    """Run the acceptance scenario and write results/deploy_acceptance.json + .md."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--export", type=Path, help="a `fovea export` dir (default: train a tiny one)")
    ap.add_argument("--workdir", type=Path, help="where devices go (default: a temp dir)")
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--soak", type=float, default=5.0, help="canary soak seconds")
    ap.add_argument("--quick", action="store_true", help="2 devices, 1 s soak (CI smoke size)")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.soak = 2, 1.0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fovea-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    export = args.export or tiny_export(work / "model")
    public, v1, v2, v3 = bundles(export, work)
    prepare_s = time.perf_counter() - t0

    targets = [
        FlashTarget(LocalTransport(f"dev-{i}"), str(work / f"dev-{i}" / "root"),
                    str(work / f"dev-{i}" / "opt"), _free_port())
        for i in range(1, args.devices + 1)
    ]  # fmt: skip
    plan = FlashPlan(
        bundle=v1, trusted_key=public, agent_venv=sys.prefix, supervisor="process",
        listen_host="127.0.0.1", ready_timeout=120.0,
    )  # fmt: skip
    t0 = time.perf_counter()
    flashed = flash(targets, plan)
    flash_s = time.perf_counter() - t0
    failed = [r for r in flashed if not r.ok]
    if failed:
        raise SystemExit(f"flash failed: {[(r.host, r.error) for r in failed]}")

    inventory = Inventory(work / "fleet.db")
    for target, result in zip(targets, flashed, strict=True):
        assert result.url is not None and result.token is not None
        pidfile = ServiceSpec("fovea-agent", ("true",), target.root, target.prefix).pidfile
        spec = TransportSpec(
            kind="local", root=target.root, agent=f"{sys.prefix}/bin/fovea-agent",
            restart=("sh", "-c", f"kill -HUP $(cat {pidfile})"),
        )  # fmt: skip
        inventory.add(Device(host=target.host, url=result.url, token=result.token, transport=spec))

    def log(host: str, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {host}: {text}")

    good = RolloutPlan(canary=1, soak_s=args.soak, check_interval_s=1.0, ready_timeout_s=120)
    ok = asyncio.run(rollout(inventory, BundleChange(v2), good, on=log))
    _pin_fp16(Path(targets[0].root))  # the canary's settings force a precision v3 lacks
    bad = RolloutPlan(
        canary=1, canary_hosts=(targets[0].host,), soak_s=args.soak, check_interval_s=1.0,
        ready_timeout_s=30,
    )  # fmt: skip
    back = asyncio.run(rollout(inventory, BundleChange(v3), bad, on=log))
    final = {d.host: d.model_version for d in inventory.devices()}
    for target in targets:
        service = ServiceSpec("fovea-agent", ("true",), target.root, target.prefix)
        asyncio.run(ProcessSupervisor(LocalTransport(target.host), service).stop())

    def hosts(r: Any) -> list[dict[str, Any]]:
        return [h.model_dump() for h in r.hosts]

    payload = {
        "devices": args.devices,
        "soak_s": args.soak,
        "prepare_s": round(prepare_s, 2),
        "flash": {"seconds": round(flash_s, 2),
                  "hosts": [{"host": r.host, "status": r.status, "seconds": r.seconds}
                            for r in flashed]},
        "rollout_ok": {"status": ok.status, "seconds": ok.seconds, "hosts": hosts(ok)},
        "rollout_rolled_back": {"status": back.status, "seconds": back.seconds,
                                "hosts": hosts(back)},
        "final_versions": final,
    }  # fmt: skip
    canary = next(h for h in back.hosts if h.stage == "canary")
    table = [
        ["step", "result", "seconds", "detail"],
        ["flash 3 devices in parallel", "/".join(r.status for r in flashed), f"{flash_s:.1f}",
         "process supervisor, LocalTransport"],
        ["canary rollout v1 -> v2", ok.status, f"{ok.seconds:.1f}", ok.summary],
        ["canary rollout v2 -> v3 (canary fails)", back.status, f"{back.seconds:.1f}",
         f"canary {canary.host}: {canary.result} (revert {canary.steps.get('revert', 0):.1f}s)"],
        ["final bundle versions", "", "", ", ".join(f"{h}=v{v}" for h, v in final.items())],
    ]  # fmt: skip
    write("deploy_acceptance" + ("_quick" if args.quick else ""), payload, table)
    if ok.status != "succeeded" or back.status != "rolled back" or set(final.values()) != {2}:
        raise SystemExit("acceptance not met: see the table above")


if __name__ == "__main__":
    main()
