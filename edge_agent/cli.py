"""The ``fovea-agent`` command: install, roll back, serve, users, audit, backup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_agent import agent_version

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Fovea's edge agent for Jetson devices."
)
users_app = typer.Typer(no_args_is_help=True, help="Accounts: technicians, clinicians, admins.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
trust_app = typer.Typer(no_args_is_help=True, help="Trusted signing keys: signed updates only.")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(trust_app, name="trust")

Root = Annotated[
    Path,
    typer.Option("--root", envvar="FOVEA_AGENT_ROOT", help="device root (slots, state.db, ...)"),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _config(root: Path, **overrides: Any) -> Any:
    from edge_agent.service import load_config

    try:
        return load_config(root, **overrides)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _store(root: Path) -> Any:
    from edge_agent.install import DeviceRoot
    from edge_agent.store import Store, StoreError

    device = DeviceRoot(root).ensure()
    try:
        return Store(device.state_db, audit_key=device.audit_key)
    except StoreError as exc:  # e.g. its audit key is missing: say what to do
        raise _fail(str(exc)) from None


@app.command("version")
def show_version() -> None:
    """Print the agent's version."""
    typer.echo(f"fovea-agent {agent_version()}")


@app.command()
def serve(
    root: Root,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    backend: Annotated[str | None, typer.Option(help="auto, onnxruntime or tensorrt")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, fp16, int8, int8dyn")] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads")] = None,
    max_batch: Annotated[int | None, typer.Option(help="dynamic batching: rows")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="dynamic batching: wait")] = None,
) -> None:
    """Serve the installed bundle (settings: ROOT/agent.yaml, overridden by these flags)."""
    from edge_agent.service import serve as run

    config = _config(
        root, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, backend=backend,
        precision=precision, threads=threads, max_batch=max_batch, max_wait_ms=max_wait_ms,
    )  # fmt: skip
    try:
        run(root, config, log=typer.echo)
    except (ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def install(
    bundle: Annotated[Path, typer.Argument(help="a signed bundle (.tar)")],
    root: Root,
    allow_downgrade: Annotated[bool, typer.Option(help="accept an older version")] = False,
) -> None:
    """Verify BUNDLE, unpack it into the inactive slot, measure its precisions, switch to it."""
    from edge_agent.bundle import Manifest
    from edge_agent.install import DeviceRoot, sync_history
    from edge_agent.install import install as run_install
    from edge_agent.runtime import measure

    config = _config(root)
    device = DeviceRoot(root).ensure()

    def prepare(slot_dir: Path, manifest: Manifest) -> None:
        typer.echo(f"checking {manifest.name} v{manifest.version}: golden outputs, precisions")
        chosen = measure(device.engines, slot_dir, manifest, config, log=typer.echo)["chosen"]
        typer.echo(f"chosen: {chosen['backend']} {chosen['precision']}")

    store = _store(root)
    try:
        result = run_install(device, bundle, allow_downgrade=allow_downgrade, prepare=prepare)
    except (ValueError, RuntimeError) as exc:
        store.record_update(
            from_version=None, to_version=None, slot="-", status="failed",
            detail={"bundle": str(bundle), "error": str(exc)},
        )  # fmt: skip
        raise _fail(str(exc)) from None
    sync_history(device, store, live=result.attempt)  # this install (and any a crash hid)
    typer.echo(
        f"installed {result.manifest.name} v{result.manifest.version} into slot {result.slot} "
        f"(was {result.previous_version}); restart 'fovea-agent serve' to use it"
    )


@app.command()
def rollback(root: Root) -> None:
    """Switch back to the previous slot's bundle (once its files and golden outputs verify)."""
    from edge_agent.bundle import Manifest
    from edge_agent.install import DeviceRoot, sync_history
    from edge_agent.install import rollback as run_rollback
    from edge_agent.runtime import open_checked

    config, device = _config(root), DeviceRoot(root)
    store = _store(root)

    def golden(slot_dir: Path, manifest: Manifest) -> None:
        backend, _, result = open_checked(device.engines, slot_dir, manifest, config)
        backend.close()
        typer.echo(f"golden outputs: {result.describe()}")

    try:
        result = run_rollback(device, prepare=golden, reason="fovea-agent rollback")
    except (ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    sync_history(device, store, live=result.attempt)
    typer.echo(f"rolled back to {result.manifest.name} v{result.manifest.version}")


@app.command()
def status(root: Root) -> None:
    """Print the installed bundle, the precision choice, update history and counts as JSON."""
    from edge_agent.bundle import manifest_digest
    from edge_agent.install import DeviceRoot, active_manifest, read_updates
    from edge_agent.runtime import selection_path

    device = DeviceRoot(root)
    manifest = active_manifest(device)
    out: dict[str, Any] = {"root": str(root), "agent_version": agent_version()}
    if manifest is None:
        out["installed"] = None
    else:
        out["installed"] = {
            "name": manifest.name, "version": manifest.version, "slot": device.active_slot(),
            "precisions": sorted(manifest.precisions),
        }  # fmt: skip
        record = selection_path(device.engines, manifest_digest(device.current))
        if record.is_file():
            out["precision_choice"] = json.loads(record.read_text()).get("chosen")
    out["updates"] = [u.model_dump(mode="json") for u in read_updates(device.updates_log)[-5:]]
    if device.state_db.exists():
        out["counts"] = _store(root).counts()
    typer.echo(json.dumps(out, indent=2))


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="account name")],
    root: Root,
    role: Annotated[str, typer.Option(help="technician, clinician or admin")],
) -> None:
    """Create an account and print its bearer token (shown only this once)."""
    try:
        token = _store(root).add_user(name, role, actor="cli")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(token)


@audit_app.command("verify")
def audit_verify(
    root: Root,
    anchor: Annotated[
        str | None,
        typer.Option(
            help="a chain head kept off the device: SEQ:HASH, a signed head's JSON, or a file "
            "holding either (`fovea fleet anchor HOST`)"
        ),
    ] = None,
) -> None:
    """Check the audit chain and every screening, review and kept image against it; exit 1
    and list every problem (edited, deleted, swapped, unentered rows, truncation, rewriting)."""
    from edge_agent.store import Anchor

    parsed = None
    if anchor is not None:
        text = anchor
        if not anchor.lstrip().startswith("{") and Path(anchor).is_file():
            text = Path(anchor).read_text()
        try:
            parsed = Anchor.parse(text)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    check = _store(root).verify_audit(parsed)
    if not check.ok:
        typer.secho(
            f"audit log tampered: {len(check.problems)} problem(s) in {check.entries} entries",
            fg=typer.colors.RED, err=True,
        )  # fmt: skip
        for problem in check.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)
    against = f", anchor entry {parsed.seq} present" if parsed is not None else ""
    typer.echo(
        f"audit log intact: {check.entries} entries, every clinical row matches its entry"
        f"{against}; head {check.head_seq}:{check.head_hash}"
    )


@audit_app.command("rekey")
def audit_rekey(
    root: Root,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Start a new audit key after the old one (ROOT/keys/audit.key) was lost for good.

    Restore the key from the device's backup instead if you can: entries made with the lost key
    can no longer be checked on this device (`audit verify` names them), only against the fleet's
    anchor from before. Every existing row is entered again under the new key."""
    from edge_agent.install import DeviceRoot
    from edge_agent.store import Store, StoreError

    device = DeviceRoot(root)
    if not yes:
        typer.confirm(f"start a new audit key for {device.state_db}?", abort=True)
    try:
        store = Store(device.state_db, audit_key=device.audit_key, rekey=True)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    head = store.signed_head()
    store.close()
    typer.echo(
        f"new audit key {head['key_id']} in {device.audit_key} (mode 0600); chain head "
        f"{head['seq']}. Poll the device from the fleet (`fovea fleet poll`) to anchor it."
    )


@trust_app.command("apply")
def trust_apply(
    update: Annotated[Path, typer.Argument(help="signed update (fovea keys rotate/revoke)")],
    root: Root,
) -> None:
    """Verify a signed trust update and apply it to ROOT/keys (trusted/, revoked/)."""
    from edge_agent.bundle import BundleError, apply_trust_update
    from edge_agent.install import DeviceRoot, active_manifest

    device = DeviceRoot(root).ensure()
    try:
        result = apply_trust_update(update, device.path / "keys")
    except BundleError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"applied trust update {result.sequence} (signed by {result.signer}): "
        f"added {list(result.added)}, revoked {list(result.revoked)}; "
        f"trusted now {list(result.trusted_now)}"
    )
    try:
        active_manifest(device)
    except (ValueError, RuntimeError):
        typer.secho(
            "warning: the installed bundle is no longer signed by a trusted key; install one "
            "signed by a trusted key (fovea-agent install BUNDLE --allow-downgrade)",
            fg=typer.colors.YELLOW, err=True,
        )  # fmt: skip


@trust_app.command("show")
def trust_show(root: Root) -> None:
    """Print the trusted and revoked key ids and the last applied update's sequence as JSON."""
    from edge_agent.bundle import BundleError, read_state
    from edge_agent.install import DeviceRoot

    device = DeviceRoot(root)
    try:
        trusted, revoked = device.keys.load()
        state = read_state(device.path / "keys")
    except BundleError as exc:
        raise _fail(str(exc)) from None
    out = {"sequence": state.sequence, "trusted": sorted(set(trusted) - set(revoked)),
           "revoked": sorted(revoked)}  # fmt: skip
    typer.echo(json.dumps(out, indent=2))


@app.command()
def backup(dest: Annotated[Path, typer.Argument(help="file to write")], root: Root) -> None:
    """Write a consistent copy of state.db to DEST (safe while the agent serves)."""
    try:
        path = _store(root).backup(dest, actor="cli")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"wrote {path}")


@app.command()
def node(
    root: Root,
    superlink: Annotated[str, typer.Option(help="the federation's SuperLink, HOST:PORT")],
    insecure: Annotated[bool, typer.Option(help="no TLS (loopback tests only)")] = False,
    root_certificates: Annotated[
        Path | None, typer.Option(help="CA certificate (PEM) the SuperLink's TLS is checked with")
    ] = None,
    auth_key: Annotated[
        Path | None, typer.Option(help="this node's private key (SuperNode authentication)")
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(
            help="the site's name in the federation (default: agent.yaml's site, else the root "
            "folder's name; the agent picks its entry in a bundle's site_thresholds.json by it)"
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="torch threads for training")] = 2,
    port: Annotated[int, typer.Option(help="local port of the SuperNode's runtime API")] = 9094,
    trusted_entities: Annotated[
        Path | None, typer.Option(help="YAML of publisher keys whose signed Apps may run")
    ] = None,
) -> None:
    """Join federated rounds: run this device's Flower SuperNode (training at low priority)."""
    from edge_agent.fl import NodeSettings, run_node
    from edge_agent.service import load_config

    try:
        site = site or load_config(root).site  # one name for the agent and its node
        settings = NodeSettings(
            root=root,
            superlink=superlink,
            insecure=insecure,
            root_certificates=root_certificates,
            auth_key=auth_key,
            site=site,
            threads=threads,
            port=port,
            trusted_entities=trusted_entities,
        )
        code = run_node(settings)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.callback()
def _root() -> None:
    """Fovea's edge agent: signed bundles in A/B slots, KServe v2 and screening over HTTP."""


def main() -> None:
    """Entry point of the ``fovea-agent`` console script."""
    app()
