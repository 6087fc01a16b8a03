"""The ``fovea`` command assembled from its groups: one module per group in this package."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from server.cli import compress, data, demo, export, federation, flash, fleet, keys, report, train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fovea: distill, export, deploy and federate retinal screening models.",
)
app.add_typer(data.data_app, name="data")
app.add_typer(train.teacher_app, name="teacher")
app.command("distill")(train.distill)
app.command("compress")(compress.compress_command)
app.command("export")(export.export_cmd)
app.command("demo")(demo.demo)
app.command("flash")(flash.flash_command)
app.add_typer(keys.keys_app, name="keys")
app.add_typer(keys.bundle_app, name="bundle")
app.add_typer(fleet.fleet_app, name="fleet")
app.add_typer(federation.federation_app, name="federation")
app.command("report")(report.report_command)
console = Console()


def main() -> None:
    """Entry point of the ``fovea`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        console.print(
            "interrupted; finished work (epochs, prepared images) is kept: run again to resume"
        )
        sys.exit(130)
