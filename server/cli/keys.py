"""``fovea keys`` (generate, rotate, revoke, list) and ``fovea bundle`` (build, verify, inspect)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from deploy.bundle import BundleSummary
from deploy.keys import KeyInfo

keys_app = typer.Typer(no_args_is_help=True, help="Signing keys and signed trust updates.")
bundle_app = typer.Typer(no_args_is_help=True, help="Signed model bundles.")
console = Console(soft_wrap=True)  # paths stay whole, to copy and paste

KeyDir = Annotated[
    Path,
    typer.Option("--dir", envvar="FOVEA_KEY_DIR", help="key directory (keys, ledger, updates)"),
]
_DEFAULT_DIR = Path(".fovea/keys")


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _print_key(info: KeyInfo, what: str) -> None:
    console.print(f"{what} key [bold]{info.key_id}[/bold] ({info.name}, {info.status})")
    console.print(f"  private key: {info.private} (mode 0600, keep it secret)")
    console.print(f"  public key:  {info.public}")
    if info.update is not None:
        console.print(f"  trust update: [bold]{info.update}[/bold]")
        console.print(f"  apply it on every device: fovea-agent trust apply {info.update} --root R")


@keys_app.command("generate")
def keys_generate(
    name: Annotated[str, typer.Argument(help="key name (letters, digits, '.', '_', '-')")],
    key_dir: KeyDir = _DEFAULT_DIR,
) -> None:
    """Create the first signing key of a key directory (NAME.key with mode 0600, NAME.pub)."""
    from deploy.keys import generate_key

    try:
        info = generate_key(key_dir, name)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    _print_key(info, "generated")
    console.print(f"  devices trust it when flashed with {info.public}")


@keys_app.command("rotate")
def keys_rotate(
    key_dir: KeyDir = _DEFAULT_DIR,
    name: Annotated[str | None, typer.Option(help="name of the new key")] = None,
) -> None:
    """Make a new signing key and a trust update that adds it, signed by the current key."""
    from deploy.keys import rotate_key

    try:
        info = rotate_key(key_dir, name)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    _print_key(info, "new current")
    console.print("  the previous key stays trusted until `fovea keys revoke` revokes it")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="key id (or a unique prefix, or the key's name)")],
    key_dir: KeyDir = _DEFAULT_DIR,
) -> None:
    """Revoke KEY with a trust update signed by the current key."""
    from deploy.keys import revoke_key

    try:
        info = revoke_key(key_dir, key)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    _print_key(info, "revoked")


@keys_app.command("list")
def keys_list(key_dir: KeyDir = _DEFAULT_DIR) -> None:
    """List the keys of a key directory."""
    from deploy.keys import list_keys

    try:
        keys = list_keys(key_dir)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    if not keys:
        _fail(f"{key_dir} holds no keys; run `fovea keys generate NAME --dir {key_dir}`")
    table = Table("key id", "name", "status", "private key")
    for k in keys:
        table.add_row(k.key_id, k.name, k.status + (" (current)" if k.current else ""),
                      str(k.private))  # fmt: skip
    console.print(table)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def print_summary(summary: BundleSummary, *, files: bool = True) -> None:
    """A one-screen, readable summary of a bundle."""
    m = summary.manifest
    console.print(f"[bold]{summary.path}[/bold]  ({_mib(summary.size)})")
    console.print(f"  model:      {m.name} ({m.family}), version {m.version}")
    console.print(f"  created:    {m.created:%Y-%m-%d %H:%M:%S %Z}; needs agent >= "
                  f"{m.min_agent_version}")  # fmt: skip
    status = "signature verified" if summary.verified_by else "signature not checked: --trusted DIR"
    console.print(f"  signer:     {m.signer} ({status})")
    console.print(f"  digest:     {summary.digest}")
    console.print(f"  thresholds: referral {m.thresholds.referral:.4f}, gradable "
                  f"{m.thresholds.gradable:.2f}; accuracy budget fp16 "
                  f"{m.accuracy_budget_points.fp16} / int8 {m.accuracy_budget_points.int8} "
                  "points")  # fmt: skip
    table = Table("precision", "file", "size", "held-out accuracy", title="precisions")
    for name, p in sorted(m.precisions.items()):
        acc = "-" if p.heldout_accuracy is None else f"{p.heldout_accuracy:.2f} %"
        table.add_row(name, p.file, _mib(p.size_bytes), acc)
    console.print(table)
    total = sum(f.size for f in m.files.values())
    if files:
        ftable = Table("file", "size", "sha256", title=f"{len(m.files)} files, {_mib(total)}")
        for name, f in sorted(m.files.items()):
            ftable.add_row(name, _mib(f.size), f.sha256[:16])
        console.print(ftable)
    else:
        console.print(f"  files:      {len(m.files)}, {_mib(total)}")


@bundle_app.command("build")
def bundle_build(
    export_dir: Annotated[Path, typer.Argument(help="a `fovea export` directory")],
    version: Annotated[int, typer.Option(help="bundle version (monotonic, >= 1)")],
    key: Annotated[Path, typer.Option(help="private signing key (NAME.key, mode 0600)")],
    out: Annotated[Path | None, typer.Option(help="bundle file (default <name>-v<N>.tar)")] = (
        None
    ),
    min_agent_version: Annotated[str | None, typer.Option(help="oldest agent it runs on")] = None,
) -> None:
    """Build and sign a bundle of EXPORT_DIR."""
    from deploy.bundle import build, inspect

    try:
        with console.status(f"hashing and packing {export_dir} ..."):
            path = build(export_dir, version, key, out, min_agent_version=min_agent_version)
        summary = inspect(path)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    console.print(f"wrote [bold]{path}[/bold]")
    print_summary(summary, files=False)


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="a bundle (.tar)")],
    trusted: Annotated[Path, typer.Option(help="directory of trusted .pub keys")],
) -> None:
    """Verify BUNDLE as a device would: trusted signature, every file's size and sha256."""
    from deploy.bundle import verify

    try:
        with console.status(f"verifying {bundle} ..."):
            summary = verify(bundle, trusted)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    m = summary.manifest
    console.print(f"[green]ok[/green]: {bundle} is {m.name} v{m.version}, "
                  f"{len(m.files)} files intact, signed by trusted key {m.signer}")  # fmt: skip


@bundle_app.command("inspect")
def bundle_inspect(
    bundle: Annotated[Path, typer.Argument(help="a bundle (.tar)")],
    trusted: Annotated[Path | None, typer.Option(help="also check the signature")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Summarise BUNDLE: model, version, precisions, sizes, thresholds, signer, files."""
    from deploy.bundle import inspect

    try:
        summary = inspect(bundle, trusted)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    else:
        print_summary(summary)
