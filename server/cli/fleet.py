"""``fovea fleet``: the device inventory, polling, staged rollouts, rollback, agent upgrades,
and the admins' read-only web page with its own accounts."""

from __future__ import annotations

import asyncio
import shlex
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from deploy import SshTarget
from deploy.fleet import (
    AccountError,
    AgentChange,
    BundleChange,
    Change,
    Device,
    InventoryError,
    PageAccounts,
    Rollout,
    RolloutPlan,
    TransportSpec,
    apply_threshold_policy,
    poll,
    rollback,
    rollout,
    when,
)
from deploy.fleet import accept_rekey as accept_rekey_of
from edge_agent.bundle import BundleError
from server.cli.fleet_common import DEFAULT_DB, Db, Hosts, console
from server.cli.fleet_common import fail as _fail
from server.cli.fleet_common import inventory_of as _inventory
from server.cli.fleet_common import names as _names
from server.cli.fleet_federation import federation_runs
from server.cli.fleet_thresholds import print_verdicts, thresholds_app
from server.console import print_devices, print_rollout

fleet_app = typer.Typer(no_args_is_help=True, help="The device fleet: inventory and rollouts.")
users_app = typer.Typer(no_args_is_help=True, help="Accounts of the fleet page (fleet serve).")
fleet_app.add_typer(users_app, name="users")
fleet_app.add_typer(thresholds_app, name="threshold")


def _run(coro: Coroutine[Any, Any, Rollout]) -> Rollout:
    try:
        with console.status("working ..."):
            return asyncio.run(coro)
    except (InventoryError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _event(host: str, text: str) -> None:
    console.log(f"[bold]{host}[/bold] {text}")


@fleet_app.command("add")
def add(
    host: Annotated[str, typer.Argument(help="the device's name in the fleet")],
    url: Annotated[str, typer.Option(help="the agent's URL, e.g. http://10.0.0.5:8000")],
    token: Annotated[
        str, typer.Option(envvar="FOVEA_FLEET_TOKEN", help="the fleet account's bearer token")
    ],
    db: Db = DEFAULT_DB,
    site: Annotated[str | None, typer.Option(help="the site (hospital, clinic)")] = None,
    hardware: Annotated[str | None, typer.Option(help="e.g. Jetson AGX Xavier")] = None,
    ssh: Annotated[str | None, typer.Option(help="reach it over SSH: user@host:port")] = None,
    local: Annotated[Path | None, typer.Option(help="a device root on this machine")] = None,
    root: Annotated[str, typer.Option(help="device root on the device (ssh)")] = "/var/lib/fovea",
    agent: Annotated[str, typer.Option(help="fovea-agent on the device")] = "fovea-agent",
    restart: Annotated[str | None, typer.Option(help="command that restarts the agent")] = None,
    key: Annotated[Path | None, typer.Option(help="SSH private key")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="known_hosts file")] = None,
    wheelhouse: Annotated[
        str | None, typer.Option(help="agent wheel folder on the device (default: PREFIX/wheels)")
    ] = None,
    replace: Annotated[bool, typer.Option(help="overwrite a device of this name")] = False,
    run_as: Annotated[
        str | None, typer.Option(help="run fovea-agent as this user (the agent's service user)")
    ] = None,
) -> None:
    """Add a device to the inventory (then `fovea fleet poll` fills in what it runs)."""
    if (ssh is None) == (local is None):
        raise _fail(
            "say how to reach the device: exactly one of --ssh USER@HOST:PORT or --local ROOT"
        )
    argv = tuple(shlex.split(restart)) if restart else None
    try:
        if ssh is not None:
            target = SshTarget.parse(ssh)
            spec = TransportSpec(
                kind="ssh", root=root, agent=agent, restart=argv, user=target.user,
                address=target.host, port=target.port, key=str(key) if key else None,
                known_hosts=str(known_hosts) if known_hosts else None, wheelhouse=wheelhouse,
                run_as=run_as,
            )  # fmt: skip
        else:
            assert local is not None
            spec = TransportSpec(
                kind="local", root=str(local.resolve()), agent=agent, restart=argv,
                wheelhouse=wheelhouse, run_as=run_as,
            )  # fmt: skip
        device = Device(
            host=host, url=url, token=token, site=site, hardware=hardware, transport=spec
        )
        _inventory(db).add(device, replace=replace)
    except (ValueError, InventoryError) as exc:
        raise _fail(str(exc).replace("\n", " ")) from None
    console.print(f"added {host} ({url}) to {db}")


@fleet_app.command("list")
def list_devices(
    db: Db = DEFAULT_DB, site: Annotated[str | None, typer.Option(help="only this site")] = None
) -> None:
    """Print the fleet table as last polled."""
    print_devices(_inventory(db).devices(site=site), console)


@fleet_app.command("poll")
def poll_command(db: Db = DEFAULT_DB, hosts: Hosts = None) -> None:
    """Ask every device's /v1/status (fleet token) and agent version; store and print them."""
    inventory = _inventory(db)
    try:
        with console.status("polling ..."):
            devices = asyncio.run(poll(inventory, _names(hosts)))
            verdicts = asyncio.run(apply_threshold_policy(inventory, _names(hosts)))
    except InventoryError as exc:
        raise _fail(str(exc)) from None
    print_devices(devices, console)
    print_verdicts(verdicts)


def _plan(canary: int, soak: float, ready_timeout: float, max_new_errors: int, parallel: int,
          canary_hosts: str | None, build_timeout: float) -> RolloutPlan:  # fmt: skip
    try:
        return RolloutPlan(
            canary=canary, soak_s=soak, ready_timeout_s=ready_timeout,
            max_new_errors=max_new_errors, parallel=parallel,
            canary_hosts=tuple(_names(canary_hosts) or ()), build_timeout_s=build_timeout,
        )  # fmt: skip
    except ValueError as exc:
        raise _fail(str(exc)) from None


Canary = Annotated[int, typer.Option(help="devices updated and soaked first")]
Soak = Annotated[float, typer.Option(help="seconds to watch the canaries' health and errors")]
ReadyTimeout = Annotated[float, typer.Option(help="seconds a restarted agent has to be ready")]
MaxErrors = Annotated[int, typer.Option(help="new server errors a canary may show in the soak")]
Parallel = Annotated[int, typer.Option(help="devices updated at once after the canaries")]
CanaryHosts = Annotated[str | None, typer.Option(help="comma-separated preferred canaries")]
BuildTimeout = Annotated[
    float, typer.Option(help="seconds a device saying 'starting' (building engines) is waited on")
]


def _roll(change_of: Callable[[Path], Change], artifact: Path, db: Path, plan: RolloutPlan,
          hosts: str | None, site: str | None) -> None:  # fmt: skip
    if not artifact.is_file():
        raise _fail(f"{artifact} does not exist")
    try:
        change = change_of(artifact)
    except (BundleError, ValueError) as exc:
        raise _fail(str(exc)) from None
    inventory = _inventory(db)
    console.print(
        f"rolling {change.kind} {change.target} out: "
        f"{plan.canary} canary(ies), soak {plan.soak_s:g}s"
    )
    result = _run(rollout(inventory, change, plan, hosts=_names(hosts), site=site, on=_event))
    print_rollout(result, console)
    if result.status != "succeeded":
        raise typer.Exit(1)


@fleet_app.command("anchor")
def anchor_command(
    host: Annotated[str, typer.Argument(help="the device's name in the fleet")],
    db: Db = DEFAULT_DB,
    out: Annotated[Path | None, typer.Option(help="write the anchor to this file")] = None,
    accept_rekey: Annotated[
        bool, typer.Option(help="HOST was re-keyed on purpose: anchor its new key's head")
    ] = False,
) -> None:
    """Print (or write) HOST's audit anchor, the signed chain head the last poll kept, for
    `fovea-agent audit verify --anchor FILE` on the device."""
    inventory = _inventory(db)
    try:
        inventory.get(host)
        if accept_rekey:
            old, new = asyncio.run(accept_rekey_of(inventory, host))
            console.print(
                f"{host}: anchored the new key {new.key_id}; the old anchor (key {old.key_id}, "
                f"entry {old.seq}) is kept as retired"
            )
        head = inventory.audit_head(host)
    except (InventoryError, ConnectionError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if head is None:
        raise _fail(f"no audit anchor for {host} yet: run `fovea fleet poll --hosts {host}`")
    text = head.model_dump_json()
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        console.print(f"wrote {host}'s anchor (entry {head.seq}) to {out}")


@fleet_app.command("rollout")
def rollout_command(
    bundle: Annotated[Path, typer.Argument(help="a signed bundle (.tar)")],
    db: Db = DEFAULT_DB,
    canary: Canary = 1,
    soak: Soak = 60.0,
    hosts: Hosts = None,
    site: Annotated[str | None, typer.Option(help="only this site")] = None,
    canary_hosts: CanaryHosts = None,
    ready_timeout: ReadyTimeout = 120.0,
    max_new_errors: MaxErrors = 0,
    parallel: Parallel = 8,
    build_timeout: BuildTimeout = 1800.0,
) -> None:
    """Install BUNDLE on canaries, soak, then the rest; a failing canary rolls them back."""
    plan = _plan(canary, soak, ready_timeout, max_new_errors, parallel, canary_hosts, build_timeout)
    _roll(BundleChange, bundle, db, plan, hosts, site)


@fleet_app.command("upgrade-agent")
def upgrade_agent(
    wheel: Annotated[Path, typer.Argument(help="a fovea-edge wheel")],
    db: Db = DEFAULT_DB,
    canary: Canary = 1,
    soak: Soak = 60.0,
    hosts: Hosts = None,
    site: Annotated[str | None, typer.Option(help="only this site")] = None,
    canary_hosts: CanaryHosts = None,
    ready_timeout: ReadyTimeout = 120.0,
    max_new_errors: MaxErrors = 0,
    parallel: Parallel = 8,
    build_timeout: BuildTimeout = 1800.0,
) -> None:
    """Upgrade the agent to WHEEL the same way: canaries, soak, the rest; failures go back."""
    plan = _plan(canary, soak, ready_timeout, max_new_errors, parallel, canary_hosts, build_timeout)
    _roll(AgentChange, wheel, db, plan, hosts, site)


@fleet_app.command("rollback")
def rollback_command(
    db: Db = DEFAULT_DB,
    hosts: Hosts = None,
    ready_timeout: ReadyTimeout = 120.0,
    build_timeout: BuildTimeout = 1800.0,
) -> None:
    """Roll devices (default: all) back to their previous bundle and restart them."""
    inventory = _inventory(db)
    result = _run(
        rollback(
            inventory,
            hosts=_names(hosts),
            ready_timeout_s=ready_timeout,
            build_timeout_s=build_timeout,
            on=_event,
        )
    )
    print_rollout(result, console)
    if result.status != "succeeded":
        raise typer.Exit(1)


@fleet_app.command("history")
def history(db: Db = DEFAULT_DB, limit: Annotated[int, typer.Option(help="how many")] = 10) -> None:
    """The recorded rollouts, newest first, with per-host results and timings."""
    rollouts = _inventory(db).rollouts(limit)
    if not rollouts:
        console.print(f"no rollouts recorded in {db}")
    for r in rollouts:
        print_rollout(r, console)


Accounts = Annotated[
    Path,
    typer.Option(
        "--accounts", envvar="FOVEA_FLEET_ACCOUNTS", help="the fleet page's accounts (SQLite, 0600)"
    ),
]
DEFAULT_ACCOUNTS = Path(".fovea/fleet-page.db")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument()], accounts: Accounts = DEFAULT_ACCOUNTS
) -> None:
    """Make a fleet page account; prints its token once (only its hash is kept)."""
    try:
        token = PageAccounts(accounts).add(name)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    console.print(f"added {name} to {accounts}; its token (shown once):", soft_wrap=True)
    typer.echo(token)


@users_app.command("list")
def users_list(accounts: Accounts = DEFAULT_ACCOUNTS) -> None:
    """The fleet page's accounts (names and when each was made, never tokens)."""
    found = PageAccounts(accounts).accounts()
    if not found:
        console.print(f"no accounts in {accounts}: `fovea fleet users add NAME` makes one")
    for account in found:
        typer.echo(f"{account.name}\t{when(account.created)}")


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument()], accounts: Accounts = DEFAULT_ACCOUNTS
) -> None:
    """Delete a fleet page account: its token and its browsers' sessions stop working."""
    try:
        PageAccounts(accounts).remove(name)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    console.print(f"removed {name} from {accounts}")


@fleet_app.command("serve")
def serve_command(
    db: Db = DEFAULT_DB,
    accounts: Accounts = DEFAULT_ACCOUNTS,
    federation: Annotated[
        Path | None, typer.Option(help="federation run folder(s): rounds and decisions")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8700,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
) -> None:
    """Serve the read-only fleet page (devices, alerts, proposals, rounds, rollouts) to accounts
    made with `fovea fleet users add`."""
    from deploy.fleet import PageConfig, fleet_page, serve_page  # FastAPI: only when serving

    try:
        config = PageConfig(
            inventory=db, accounts=accounts, federation_dir=federation, host=host, port=port,
            tls_cert=tls_cert, tls_key=tls_key,
        )  # fmt: skip
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not PageAccounts(accounts).accounts():
        console.print(f"[yellow]no accounts in {accounts} yet:[/yellow] `fovea fleet users add`")
    source = None if federation is None else (lambda: federation_runs(federation))
    try:
        app = fleet_page(config, source)
    except (ValueError, OSError, sqlite3.Error) as exc:
        raise _fail(f"cannot open {db} or {accounts}: {exc}") from None
    scheme = "https" if config.tls else "http"
    console.print(f"fleet page on {scheme}://{host}:{port}/ (inventory {db})")
    serve_page(config, app)


__all__ = ["fleet_app"]
