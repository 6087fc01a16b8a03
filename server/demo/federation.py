"""The demo's federation stage: two federated rounds across the demo's three local devices, then
the candidate becomes the next signed bundle or the deployed model is kept, with the reason.

The devices already serve the deployed bundle and hold the cases their clinicians reviewed in
the screening stage (``server.demo.agent``). A real SuperLink and one SuperNode per device
(``fovea-agent node``) run on 127.0.0.1; the ServerApp is this project's Flower App.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live

from deploy.flash import bundle_manifest
from server.console import status_view
from server.federation import GLOBAL_FILE, LocalNode, LoopbackFederation, Registry

__all__ = ["ROUNDS", "FederationDemo", "demo_run_config", "federation_stage"]

ROUNDS = 2
RUN_TIMEOUT_S = 420.0


@dataclass(frozen=True)
class FederationDemo:
    """What the federation stage did: the run, the decision and the bundle it built (if any)."""

    run_dir: Path
    registry: Path
    promoted: bool
    reason: str
    bundle: Path | None
    version: int | None
    seconds: float
    adaptation: dict[str, Any] | None = None
    """Deployed vs candidate at the clinic with the new camera (``server.demo.adaptation``)."""


def _next_version(bundles: Path, deployed: Path) -> int:
    versions = [bundle_manifest(deployed).version]
    versions += [bundle_manifest(b).version for b in bundles.glob("*-v*.tar")]
    return max(versions) + 1


def _export_inputs(export_dir: Path, work: Path) -> tuple[Path, Path | None]:
    """(the student's distillation config, an export config file with the deployed export's
    own settings) read from the export's ``export.json``."""
    report = json.loads((export_dir / "export.json").read_text())
    # `fovea export RUN_DIR` writes RUN_DIR/export by default; else the checkpoint it names
    run_dir = export_dir.parent
    if not (run_dir / "config.yaml").is_file():
        run_dir = Path(str(report.get("checkpoint", export_dir / "student.json"))).parent
    distill_config = run_dir / "config.yaml"
    if not distill_config.is_file():
        raise FileNotFoundError(
            f"no distillation config at {distill_config} (the run directory {export_dir}/"
            "export.json names): the federation needs it for the server's held-out site"
        )
    # the ServerApp runs in Flower's app directory: give it the config with absolute paths
    raw = yaml.safe_load(distill_config.read_text())
    data = raw.get("data", {})
    if data.get("dir") and not Path(data["dir"]).is_absolute():
        data["dir"] = str(Path(data["dir"]).resolve())
        distill_config = work / "distill-config.yaml"
        distill_config.write_text(yaml.safe_dump(raw))
    if "config" not in report:
        return distill_config, None
    export_config = work / "export-config.yaml"
    export_config.write_text(yaml.safe_dump(report["config"]))
    return distill_config, export_config


def demo_run_config(
    run_dir: Path,
    export_dir: Path,
    signing_key: Path,
    version: int,
    inputs: tuple[Path, Path | None],
) -> dict[str, bool | int | float | str]:
    """The run config of the demo's federation (two FedProx rounds, fp16 updates, promotion);
    ``inputs`` are the distillation config and the export config (see :func:`_export_inputs`)."""
    distill_config, export_config = inputs
    return {
        "model": str(export_dir.resolve()),
        "run-dir": str(run_dir.resolve()),
        "num-rounds": ROUNDS,
        "strategy": "fedprox",
        "min-train-nodes": 2,
        "min-evaluate-nodes": 2,
        "min-available-nodes": 3,
        "round-timeout": 180.0,
        "node-wait-timeout": 90.0,
        "local-epochs": 1,
        "lr": 0.0001,
        "batch-size": 16,
        "min-cases": 16,
        "heldout-fraction": 0.3,
        "class-balance": 0.5,
        "norm-stats": "frozen",
        "codec": "fp16",
        "distill-config": str(distill_config.resolve()),
        # the whole held-out site (2,000 images, ~1,860 gradable, ~600 referable): an equally
        # good candidate passes the paired gate at 2.5 points with >= 80% probability, at 0.5
        # it would need ~25,000 images (server/federation/gate.py, NOTES in the README)
        "heldout-limit": 2000,
        "promotion-margin": 2.5,
        "promote": True,
        "signing-key": str(signing_key.resolve()),
        "bundle-version": version,
        "export-config": str(export_config.resolve()) if export_config else "",
    }


def federation_stage(
    workdir: Path,
    devices: dict[str, Path],
    export_dir: Path,
    bundle: Path,
    signing_key: Path,
    console: Console,
) -> FederationDemo:
    """Two federated rounds over ``devices`` (name -> device root) on loopback, then promotion:
    the next signed bundle lands in ``workdir/bundles``, or the reason it did not is printed.

    A promoted candidate is exported with the deployed export's own settings. Raises
    ``RuntimeError`` naming the logs when the run itself fails.
    """
    started = time.perf_counter()
    work = workdir / "federation"
    run_dir = work / "run"
    shutil.rmtree(work, ignore_errors=True)  # the rounds are the demo: every run starts fresh
    work.mkdir(parents=True)
    bundles = workdir / "bundles"
    version = _next_version(bundles, bundle)
    inputs = _export_inputs(export_dir, work)
    config = demo_run_config(run_dir, export_dir, signing_key, version, inputs)
    nodes = [LocalNode(name, root) for name, root in devices.items()]
    console.print(
        f"{ROUNDS} FedProx rounds across {', '.join(devices)} (SuperLink and SuperNodes on "
        f"127.0.0.1; logs in {work})"
    )
    registry = Registry(run_dir / "registry.db")
    with LoopbackFederation(work) as fed:
        fed.start(nodes)
        with Live(console=console, refresh_per_second=1, transient=True) as live:
            outcome = fed.run(
                config,
                timeout=RUN_TIMEOUT_S,
                on_poll=lambda: live.update(status_view(registry, ROUNDS)),
            )
        if not outcome.completed:
            raise RuntimeError(
                f"the federated run ended {outcome.status}: {outcome.details}\n"
                f"logs: {work}/*.log\n{fed.logs(1500)}"
            )
    console.print(status_view(registry, ROUNDS))
    decisions = registry.decisions()
    if not decisions:
        raise RuntimeError(f"the run finished without a promotion decision; see {outcome.log}")
    decision = decisions[-1]
    promoted_bundle = None
    if decision.promoted and decision.bundle:
        bundles.mkdir(parents=True, exist_ok=True)
        built = Path(decision.bundle)
        promoted_bundle = Path(shutil.copy2(built, bundles / built.name))
        console.print(f"[green]promoted[/green]: bundle v{decision.version} {promoted_bundle}")
    else:
        console.print(f"[yellow]kept the deployed bundle[/yellow] {bundle}: {decision.reason}")
    adaptation = _adaptation(work, run_dir, export_dir, devices, console)
    return FederationDemo(
        run_dir=run_dir,
        registry=run_dir / "registry.db",
        promoted=promoted_bundle is not None,
        reason=decision.reason,
        bundle=promoted_bundle,
        version=decision.version if promoted_bundle else None,
        seconds=time.perf_counter() - started,
        adaptation=adaptation,
    )


def _adaptation(
    work: Path, run_dir: Path, export_dir: Path, devices: dict[str, Path], console: Console
) -> dict[str, Any] | None:
    """Measure and keep what the rounds bought at the clinic with the new camera."""
    from server.demo.adaptation import describe_adaptation, measure_adaptation, write_adaptation
    from server.demo.agent import SHIFTED_CAMERA, SHIFTED_CLINIC

    if SHIFTED_CLINIC not in devices or not (run_dir / GLOBAL_FILE).is_file():
        return None
    result = measure_adaptation(run_dir, export_dir, SHIFTED_CLINIC, SHIFTED_CAMERA)
    write_adaptation(work, result)
    console.print(
        f"{SHIFTED_CLINIC} (new camera): deployed -> candidate on {result['images']:,} further "
        "images of its camera:"
    )
    for line in describe_adaptation(result):
        console.print(f"  {line}")
    return result
