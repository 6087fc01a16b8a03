"""What the ``fovea fleet`` commands share: the inventory option, host lists, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deploy.fleet import Inventory

console = Console()

Db = Annotated[
    Path,
    typer.Option("--db", envvar="FOVEA_FLEET_DB", help="the fleet inventory (SQLite, kept 0600)"),
]
DEFAULT_DB = Path(".fovea/fleet.db")
Hosts = Annotated[str | None, typer.Option(help="comma-separated host names (default: all)")]


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the exit (code 2) to raise."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(2)


def names(hosts: str | None) -> list[str] | None:
    """The host names of a comma-separated ``--hosts`` value (None: all)."""
    return [h.strip() for h in hosts.split(",") if h.strip()] if hosts else None


def inventory_of(db: Path) -> Inventory:
    """The inventory at ``db``, or a clear error."""
    try:
        return Inventory(db)
    except OSError as exc:
        raise fail(f"cannot open the fleet inventory {db}: {exc}") from None
