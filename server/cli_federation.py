"""``fovea federation``: start a SuperLink and the ServerApp, and watch the rounds.

``start`` runs ``flower-superlink`` (loopback by default; TLS and SuperNode authentication when
configured), writes the CLI connection into ``<state>/flwr/config.toml`` and runs ``flwr run``
of this project's App with the run config; ``status`` reads the run directory's registry.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from server.federation.registry import Registry
from server.federation.settings import FederationSettings, SettingsError

__all__ = [
    "LinkOptions",
    "federation_app",
    "run_config_toml",
    "run_outcome",
    "status_view",
    "superlink_command",
]

federation_app = typer.Typer(no_args_is_help=True, help="Federated adaptation (Flower).")
console = Console()
APP_DIR = Path(__file__).resolve().parents[1]
"""The project root: its pyproject.toml declares the Flower App."""
CONNECTION = "fovea"


@dataclass(frozen=True)
class LinkOptions:
    """How the SuperLink listens: address, TLS files, SuperNode authentication."""

    host: str = "127.0.0.1"
    port: int = 8000
    tls_dir: Path | None = None
    supernode_auth: bool = False
    register: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.register and not self.supernode_auth:
            raise ValueError("--register only makes sense with --supernode-auth")
        if self.supernode_auth and self.tls_dir is None:
            raise ValueError("SuperNode authentication requires TLS: pass --tls-dir")
        if self.tls_dir is not None:
            missing = [n for n in ("ca.crt", "server.pem", "server.key")
                       if not (self.tls_dir / n).is_file()]  # fmt: skip
            if missing:
                raise ValueError(f"--tls-dir {self.tls_dir} lacks {', '.join(missing)}")
        for key in self.register:
            if not key.is_file():
                raise ValueError(f"--register {key}: no such public key file")

    @property
    def address(self) -> str:
        """host:port for the CLI and the SuperNodes."""
        return f"{self.host}:{self.port}"


def superlink_command(link: LinkOptions, database: Path, bin_dir: Path) -> list[str]:
    """The ``flower-superlink`` command line (no runtime dependency installation: no network)."""
    cmd = [
        str(bin_dir / "flower-superlink"),
        "--disable-runtime-dependency-installation",
        "--database", str(database),
        "--host", link.host,
        "--port", str(link.port),
    ]  # fmt: skip
    if link.tls_dir is None:
        cmd.append("--insecure")
    else:
        cmd += [
            "--ssl-ca-certfile", str(link.tls_dir / "ca.crt"),
            "--ssl-certfile", str(link.tls_dir / "server.pem"),
            "--ssl-keyfile", str(link.tls_dir / "server.key"),
        ]  # fmt: skip
    if link.supernode_auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def connection_toml(link: LinkOptions) -> str:
    """``$FLWR_HOME/config.toml`` with the one connection ``flwr run`` uses."""
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f"address = {json.dumps(link.address)}"]  # fmt: skip
    if link.tls_dir is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(link.tls_dir / 'ca.crt'))}")
    return "\n".join(lines) + "\n"


def run_config_toml(settings: FederationSettings) -> str:
    """The run config as a flat TOML file for ``flwr run --run-config FILE.toml``."""
    out = []
    for key, value in settings.to_run_config().items():
        text = ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)
        out.append(f"{key} = {text}")
    return "\n".join(out) + "\n"


def _load_settings(config: Path | None, sets: list[str]) -> FederationSettings:
    values: dict[str, Any] = {}
    if config is not None:
        data = yaml.safe_load(config.read_text()) or {}
        if not isinstance(data, dict):
            raise SettingsError(f"{config}: expected a mapping of run config keys")
        values.update(data)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SettingsError(f"--set {item!r}: use KEY=VALUE")
        values[key.strip()] = yaml.safe_load(raw)
    for key in ("model", "run-dir", "distill-config", "signing-key", "export-config"):
        if values.get(key):
            values[key] = str(Path(str(values[key])).expanduser().resolve())
    values.setdefault("run-dir", str(Path(".fovea/federation/run").resolve()))
    return FederationSettings.from_run_config(values)


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not listen on {host}:{port} within {timeout:g} s")


def run_outcome(log: Path, env: dict[str, str], bin_dir: Path) -> tuple[str, str]:
    """(status, details) of the run ``flwr run`` logged to ``log``, as ``flwr ls`` reports it."""
    run_id = None
    for line in log.read_text(errors="replace").splitlines():
        if "Successfully started run" in line:
            run_id = line.rsplit(" ", 1)[-1].strip()
    if run_id is None:
        return "not-started", "flwr run did not start a run"
    out = subprocess.run(
        [str(bin_dir / "flwr"), "ls", CONNECTION, "--run-id", run_id, "--format", "json"],
        capture_output=True, text=True, env=env, cwd=APP_DIR, timeout=60,
    )  # fmt: skip
    try:
        run = json.loads(out.stdout)["runs"][0]
        return str(run["status"]), str(run.get("status-details", ""))
    except (ValueError, KeyError, IndexError):
        return "unknown", f"flwr ls gave no run status: {(out.stdout + out.stderr)[-500:]}"


def status_view(registry: Registry, num_rounds: int | None = None) -> Group:
    """Rounds (counts, weighted metrics), rejected updates and decisions as rich tables."""
    rounds = Table(title="rounds")
    for col in ("round", "status", "sampled", "replied", "accepted", "train loss",
                "site acc", "held-out acc", "held-out sens", "s"):  # fmt: skip
        rounds.add_column(col, justify="right" if col != "status" else "left")
    for r in registry.rounds():

        def f(m: Any, k: str, scale: float = 1.0) -> str:
            return f"{m[k] * scale:.2f}" if k in m else "-"

        rounds.add_row(
            str(r.round), r.status + (f" ({r.note})" if r.note else ""), str(r.sampled),
            str(r.replied), str(r.accepted), f(r.train_metrics, "train-loss"),
            f(r.eval_metrics, "eval-accuracy", 100.0), f(r.server_metrics, "accuracy"),
            f(r.server_metrics, "referable_sensitivity"), f"{r.ended - r.started:.1f}",
        )  # fmt: skip
    nodes = Table(title="nodes and rejected updates")
    for col in ("round", "phase", "node", "outcome", "reason"):
        nodes.add_column(col)
    meta = registry.meta()
    names = dict(meta.get("sites") or {})
    for rnd, p in registry.participants():
        if p.outcome != "accepted":
            node = str(p.node_id)
            shown = f"{names[node]} ({node})" if node in names else node
            nodes.add_row(str(rnd), p.phase, shown, p.outcome, p.reason)
    parts: list[Any] = [rounds, nodes]
    head = f"status: {meta.get('status', 'not started')}"
    if num_rounds:
        head += f" ({len([r for r in registry.rounds() if r.round > 0])}/{num_rounds} rounds)"
    parts.insert(0, head)
    for d in registry.decisions():
        verdict = "[green]promoted[/green]" if d.promoted else "[yellow]kept deployed[/yellow]"
        where = f" -> {d.bundle} (v{d.version})" if d.bundle else ""
        parts.append(f"decision after round {d.round}: {verdict}{where}: {d.reason}")
    return Group(*parts)


_Config = Annotated[Path | None, typer.Option(help="YAML of run config keys")]
_Sets = Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE run config")]
_Host = Annotated[str, typer.Option(help="SuperLink address (loopback by default)")]
_Port = Annotated[int, typer.Option(help="SuperLink port (Fleet, Control, Runtime)")]
_Tls = Annotated[Path | None, typer.Option(help="dir with ca.crt, server.pem, server.key")]
_Auth = Annotated[bool, typer.Option(help="accept registered SuperNodes only (needs TLS)")]
_Keys = Annotated[list[Path] | None, typer.Option(help="SuperNode public key to register")]
_State = Annotated[Path, typer.Option(help="SuperLink state directory")]


@federation_app.command("start")
def start(
    config: _Config = None,
    set_: _Sets = None,
    host: _Host = "127.0.0.1",
    port: _Port = 8000,
    tls_dir: _Tls = None,
    supernode_auth: _Auth = False,
    register: _Keys = None,
    state: _State = Path(".fovea/federation/superlink"),
) -> None:
    """Start a SuperLink, run the federation (rounds, then promotion) and show its progress."""
    try:
        settings = _load_settings(config, set_ or [])
        link = LinkOptions(host, port, tls_dir.resolve() if tls_dir else None, supernode_auth,
                           tuple(k.resolve() for k in register or []))  # fmt: skip
    except (SettingsError, ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    bin_dir = Path(sys.executable).parent
    state = state.resolve()
    home = state / "flwr"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(connection_toml(link))
    run_dir = settings.path("run-dir")
    assert run_dir is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.toml").write_text(run_config_toml(settings))
    env = os.environ | {
        "FLWR_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (state / "superlink.log").open("ab")
    link_proc = subprocess.Popen(
        superlink_command(link, state / "state.db", bin_dir),
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=APP_DIR,
    )  # fmt: skip
    try:
        _wait_port(link.host, link.port, link_proc, 60)
        for key in link.register:
            reg = subprocess.run(
                [str(bin_dir / "flwr"), "supernode", "register", str(key), CONNECTION],
                capture_output=True, text=True, env=env, cwd=APP_DIR,
            )  # fmt: skip
            if reg.returncode:
                raise RuntimeError(f"registering SuperNode key {key} failed:\n"
                                   f"{(reg.stdout + reg.stderr).strip()[-1500:]}")  # fmt: skip
            console.print(f"registered SuperNode key {key}")
        flwr_log = (run_dir / "flwr-run.log").open("ab")
        run = subprocess.Popen(
            [str(bin_dir / "flwr"), "run", str(APP_DIR), CONNECTION, "--stream",
             "--run-config", str(run_dir / "run_config.toml")],
            stdout=flwr_log, stderr=subprocess.STDOUT, env=env, cwd=APP_DIR,
        )  # fmt: skip
        console.print(f"SuperLink on {link.address} ({'TLS' if tls_dir else 'insecure'}); "
                      f"run log {run_dir / 'flwr-run.log'}")  # fmt: skip
        registry = Registry(run_dir / "registry.db")
        with Live(status_view(registry, settings.num_rounds), console=console,
                  refresh_per_second=1) as live:  # fmt: skip
            while run.poll() is None:
                time.sleep(1.0)
                live.update(status_view(registry, settings.num_rounds))
            live.update(status_view(registry, settings.num_rounds))
        console.line()  # a non-terminal Live leaves its last line open
        console.print(f"registry {run_dir / 'registry.db'}, plot {run_dir / 'rounds.png'}")
        if run.returncode:
            console.print(f"[red]flwr run exited with {run.returncode}[/red]; see the run log")
            raise typer.Exit(1)
        # `flwr run --stream` exits 0 even when the ServerApp raised: ask the SuperLink
        run_status, details = run_outcome(run_dir / "flwr-run.log", env, bin_dir)
        if run_status != "finished:completed":
            console.print(f"[red]run {run_status}[/red]: {details or 'see the run log'}",
                          soft_wrap=True)  # fmt: skip
            raise typer.Exit(1)
    except RuntimeError as e:
        console.print(f"[red]error:[/red] {e} (SuperLink log {state / 'superlink.log'})",
                      soft_wrap=True)  # fmt: skip
        raise typer.Exit(1) from None
    finally:
        link_proc.terminate()
        try:
            link_proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            link_proc.kill()


@federation_app.command("status")
def status(
    run_dir: Annotated[Path, typer.Option(help="the run directory")] = Path(
        ".fovea/federation/run"
    ),
    watch: Annotated[bool, typer.Option(help="refresh until interrupted")] = False,
) -> None:
    """Rounds, nodes, per-round metrics, rejected updates and the promotion decision."""
    db = run_dir / "registry.db"
    if not db.is_file():
        console.print(f"[red]error:[/red] no federation registry at {db}", soft_wrap=True)
        raise typer.Exit(2)
    registry = Registry(db)
    rounds = registry.meta().get("run_config", {}).get("num-rounds")
    if not watch:
        console.print(status_view(registry, rounds))
        return
    with Live(status_view(registry, rounds), console=console, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(1.0)
                live.update(status_view(registry, rounds))
        except KeyboardInterrupt:
            pass
