"""``fovea report``: one self-contained HTML page about a demo workdir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def report_command(
    workdir: Annotated[
        Path, typer.Argument(help="a `fovea demo` workdir (data, teacher, student, ...)")
    ] = Path(".fovea/demo"),
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default WORKDIR/report.html)")
    ] = None,
    per_site: Annotated[
        int, typer.Option(min=10, max=100_000, help="images per site for the confusion matrices")
    ] = 300,
) -> None:
    """Write the report: models, monitors, sites, federated rounds, promotion, fleet."""
    from server.report import build_report

    if not workdir.is_dir():
        console.print(f"[red]error:[/red] {workdir} is not a directory; run `fovea demo` first")
        raise typer.Exit(2)
    with console.status("building the report ...") as status:
        path = build_report(workdir, out, per_site=per_site, log=lambda s: status.update(s))
    console.print(f"wrote [bold]{path}[/bold] (open it in a browser; it needs no other files)")
