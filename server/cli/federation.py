"""``fovea federation``: start a SuperLink and the ServerApp, and watch the rounds.

``start`` runs ``flower-superlink`` (loopback by default; TLS and SuperNode authentication when
configured), writes the CLI connection into ``<state>/flwr/config.toml`` and runs ``flwr run``
of this project's App with the run config; ``status`` reads the run directory's registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.live import Live

from server.console import status_view
from server.federation import (
    APP_DIR,
    CONNECTION,
    FederationSettings,
    LinkOptions,
    Registry,
    SettingsError,
    connection_toml,
    register_supernodes,
    run_config_toml,
    run_outcome,
    running_superlink,
)

__all__ = ["federation_app"]

federation_app = typer.Typer(no_args_is_help=True, help="Federated adaptation (Flower).")
console = Console()


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
    for key in (
        "model",
        "run-dir",
        "distill-config",
        "signing-key",
        "export-config",
        "validated-model",
    ):
        if values.get(key):
            values[key] = str(Path(str(values[key])).expanduser().resolve())
    values.setdefault("run-dir", str(Path(".fovea/federation/run").resolve()))
    return FederationSettings.from_run_config(values)


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
    try:
        with running_superlink(link, state, env, bin_dir):
            for key in register_supernodes(link, env, bin_dir):
                console.print(f"registered SuperNode key {key}")
            _run_and_watch(settings, link, run_dir, env, bin_dir)
    except RuntimeError as e:
        console.print(f"[red]error:[/red] {e} (SuperLink log {state / 'superlink.log'})",
                      soft_wrap=True)  # fmt: skip
        raise typer.Exit(1) from None


def _run_and_watch(
    settings: FederationSettings, link: LinkOptions, run_dir: Path, env: dict[str, str],
    bin_dir: Path,
) -> None:  # fmt: skip
    """Run the App with ``flwr run`` against the SuperLink and show the rounds until it ends."""
    flwr_log = (run_dir / "flwr-run.log").open("ab")
    run = subprocess.Popen(
        [str(bin_dir / "flwr"), "run", str(APP_DIR), CONNECTION, "--stream",
         "--run-config", str(run_dir / "run_config.toml")],
        stdout=flwr_log, stderr=subprocess.STDOUT, env=env, cwd=APP_DIR,
    )  # fmt: skip
    console.print(f"SuperLink on {link.address} ({'insecure' if link.tls_dir is None else 'TLS'}); "
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


@federation_app.command("validate")
def validate(
    model: Annotated[Path, typer.Argument(help="the promoted export or bundle directory")],
    by: Annotated[str, typer.Option(help="who validated the model")],
    note: Annotated[str, typer.Option(help="what the validation was")] = "",
    run_dir: Annotated[
        Path | None, typer.Option(help="also record it in this run's registry")
    ] = None,
) -> None:
    """Mark a model validated by a person: runs that start from it gate against it."""
    from server.federation import mark_validated

    if not model.is_dir():
        console.print(f"[red]error:[/red] {model} is not an export or bundle directory")
        raise typer.Exit(2)
    try:
        ref = mark_validated(model, by, note)
    except (ValueError, FileNotFoundError, OSError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    if run_dir is not None:
        Registry(run_dir / "registry.db").record_validation(ref.model_dump(mode="json"))
    console.print(f"validated by {by}: {ref.path} ({ref.digest[:12]})")
