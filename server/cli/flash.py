"""``fovea flash``: put the agent, a bundle and its trusted key onto devices, or into an
offline installer."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from deploy.flash import FlashPlan, FlashTarget

console = Console()
PROJECT = Path(__file__).resolve().parents[2]
CACHE = Path(".fovea")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(2)


@dataclass(frozen=True)
class _TargetOptions:
    """Where and how to reach each HOST: SSH settings, device paths and the agent's port."""

    port: int
    identity: tuple[Path, ...]
    known_hosts: Path | None
    check_host_key: bool
    root: str
    prefix: str


def _targets(hosts: list[str], opts: _TargetOptions) -> list[FlashTarget]:
    from deploy import LocalTransport, SshTarget, SshTransport
    from deploy.flash import FlashTarget

    targets: list[FlashTarget] = []
    for i, spec in enumerate(hosts):
        if spec.startswith("local:"):
            base = Path(spec.removeprefix("local:")).resolve()
            targets.append(
                FlashTarget(LocalTransport(spec), str(base / "root"), str(base / "opt"),
                            opts.port + i)
            )  # fmt: skip
            continue
        ssh = SshTarget.parse(
            spec, client_keys=opts.identity, known_hosts=opts.known_hosts,
            check_host_key=opts.check_host_key,
        )  # fmt: skip
        targets.append(FlashTarget(SshTransport(ssh), opts.root, opts.prefix, opts.port))
    return targets


def _agent_wheels(
    wheel: Path | None, wheelhouse: Path | None, *, agent_venv: str | None, dry_run: bool
) -> tuple[Path | None, Path | None]:
    """The fovea-edge wheel and the wheelhouse of its dependencies, built here when the device
    gets a new venv and they were not given (no wheelhouse for a dry run)."""
    from deploy.flash import build_wheel, make_wheelhouse

    if agent_venv is None and wheel is None:
        with console.status("building the fovea-edge wheel"):
            wheel = build_wheel(PROJECT, CACHE / "wheels")
        console.print(f"wheel: {wheel}")
    if agent_venv is None and wheelhouse is None and not dry_run:
        assert wheel is not None
        with console.status("downloading the agent's dependency wheels (this machine's platform)"):
            wheelhouse = make_wheelhouse(wheel, CACHE / "wheelhouse")
        console.print(f"wheelhouse: {wheelhouse} (for other architectures pass --wheelhouse)")
    return wheel, wheelhouse


def _write_installer(plan: FlashPlan, directory: Path) -> None:
    """Write the offline installer for ``plan`` into ``directory`` and say how to use it."""
    from deploy.flash import build_offline_installer

    made = build_offline_installer(plan, directory)
    console.print(f"offline installer: {made.path} ({made.path.stat().st_size / 1e6:.1f} MB)")
    console.print(f"checksum: {made.sha256_path} ({made.sha256})")
    console.print(f"on the device: sh {made.path.name} [--root DIR] [--port N]")


def _print_plan(plan: FlashPlan, targets: list[FlashTarget]) -> None:
    """What flashing would do on each target, touching none."""
    from deploy.flash import plan_lines

    console.print("[bold]dry run[/bold]: nothing is copied, installed or started")
    for line in plan_lines(plan, targets):
        console.print(line, soft_wrap=True, highlight=False)


def _flash(targets: list[FlashTarget], plan: FlashPlan, tokens_out: Path) -> None:
    """Flash every target, show the summary and save the fleet tokens; exit 1 if any failed."""
    from deploy.flash import flash, summary_table

    results = flash(targets, plan, console=console)
    console.print(summary_table(results))
    saved = _save_tokens(tokens_out, results)
    if saved:
        console.print(f"fleet tokens written to {saved} (mode 0600)")
    failed = [r for r in results if not r.ok]
    if failed:
        raise typer.Exit(1)


def _save_tokens(path: Path, results: list[Any]) -> Path | None:
    issued = {r.host: {"url": r.url, "token": r.token} for r in results if r.token}
    if not issued:
        return None
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**old, **issued}, f, indent=1)
    return path


_Worker = Annotated[str, typer.Option(help="TensorRT worker venv: auto (on a Jetson), yes or no")]
_SystemPython = Annotated[str, typer.Option(help="JetPack's Python for the worker")]
_WorkerPins = Annotated[
    Path | None, typer.Option(help="the worker's pins (default: per L4T release)")
]
_BuildTimeout = Annotated[
    float, typer.Option(help="seconds to wait while the agent builds engines")
]


def flash_command(
    hosts: Annotated[
        list[str] | None, typer.Argument(help="[user@]host[:port] over SSH, or local:DIR")
    ] = None,
    bundle: Annotated[Path, typer.Option(help="signed bundle (.tar)")] = Path("bundle.tar"),
    key: Annotated[Path, typer.Option(help="the signer's public key (.pub) the device trusts")] = (
        Path("keys/site.pub")
    ),
    wheel: Annotated[Path | None, typer.Option(help="a built fovea-edge wheel")] = None,
    wheelhouse: Annotated[
        Path | None, typer.Option(help="the device architecture's wheels (Jetson: site-supplied)")
    ] = None,
    agent_venv: Annotated[
        str | None, typer.Option(help="reuse this venv on the device (holds fovea-edge already)")
    ] = None,
    device_python: Annotated[str, typer.Option(help="Python 3.11 on the device")] = "python3.11",
    identity: Annotated[
        list[Path] | None, typer.Option("--identity", "-i", help="SSH private key")
    ] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="default ~/.ssh/known_hosts")] = None,
    no_host_key_check: Annotated[
        bool, typer.Option(help="do not check SSH host keys (trusted networks only)")
    ] = False,
    root: Annotated[str, typer.Option(help="device root on the device")] = "/var/lib/fovea",
    prefix: Annotated[str, typer.Option(help="venv, wheels, bundles on the device")] = "/opt/fovea",
    port: Annotated[int, typer.Option(help="agent port (local:DIR hosts count up)")] = 8000,
    listen: Annotated[str, typer.Option(help="address the agent listens on")] = "0.0.0.0",
    supervisor: Annotated[str, typer.Option(help="auto, systemd or process")] = "auto",
    parallel: Annotated[int, typer.Option(min=1, help="hosts at once")] = 8,
    rotate_token: Annotated[bool, typer.Option(help="new fleet token if the account exists")] = (
        False
    ),
    tokens_out: Annotated[Path, typer.Option(help="fleet tokens (JSON, 0600)")] = (
        CACHE / "flash-tokens.json"
    ),
    offline_installer: Annotated[
        Path | None, typer.Option(help="write an offline installer into DIR instead of flashing")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan; touch no device")] = False,
    worker: _Worker = "auto",
    system_python: _SystemPython = "/usr/bin/python3",
    worker_requirements: _WorkerPins = None,
    build_timeout: _BuildTimeout = 1800.0,
) -> None:
    """Flash devices: agent + venv, bundle, trusted key, service, fleet account; wait ready."""
    from deploy.flash import FlashPlan

    if key.suffix == ".key":
        key = key.with_suffix(".pub")
    if not hosts and offline_installer is None:
        raise _fail("name at least one HOST (or --offline-installer DIR)")
    wheel, wheelhouse = _agent_wheels(wheel, wheelhouse, agent_venv=agent_venv, dry_run=dry_run)
    try:
        plan = FlashPlan(
            bundle=bundle, trusted_key=key, wheel=wheel, wheelhouse=wheelhouse,
            agent_venv=agent_venv, device_python=device_python, listen_host=listen,
            supervisor=supervisor, parallel=parallel, rotate_token=rotate_token,  # type: ignore[arg-type]
            worker=worker, system_python=system_python,  # type: ignore[arg-type]
            worker_requirements=worker_requirements, build_timeout=build_timeout,
        )  # fmt: skip
        opts = _TargetOptions(
            port=port, identity=tuple(identity or []), known_hosts=known_hosts,
            check_host_key=not no_host_key_check, root=root, prefix=prefix,
        )  # fmt: skip
        targets = _targets(hosts or [], opts)
    except ValueError as e:
        raise _fail(str(e)) from None
    if offline_installer is not None:
        _write_installer(plan, offline_installer)
        if not hosts:
            return
    if dry_run:
        _print_plan(plan, targets)
        return
    _flash(targets, plan, tokens_out)
