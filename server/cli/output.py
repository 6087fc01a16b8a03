"""What the ``fovea`` commands share when they talk to the user: the console and the error exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` in red and leave the command with exit ``code``."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code)
