"""``fovea demo``: the whole loop on built-in defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from server.cli.output import console, fail


def demo(
    workdir: Annotated[Path, typer.Option(help="where data and runs go")] = Path(".fovea/demo"),
    fresh: Annotated[bool, typer.Option(help="ignore cached stages")] = False,
) -> None:
    """The whole loop on built-in defaults, from synthetic data to a rolled-out new bundle."""
    from server.demo import run_demo

    try:
        run_demo(workdir, fresh=fresh, console=console)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
