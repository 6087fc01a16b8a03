"""``fovea compress CONFIG.yaml``: run a declared sequence of compression steps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def compress_command(
    config: Annotated[Path, typer.Argument(help="compression config (YAML)")],
    resume: Annotated[
        bool, typer.Option("--resume/--restart", help="reuse finished steps in the output")
    ] = True,
) -> None:
    """Compress a model step by step (layers, channels, heads, QAT ...), distilling after each."""
    from server.compress import compress, load_compress_config, print_compress_summary
    from server.console import progress_reporter
    from server.training import ConfigError

    try:
        cfg = load_compress_config(config)
        with progress_reporter(console) as report:
            outcome = compress(cfg, log=console.print, report=report, resume=resume)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    print_compress_summary(outcome.report, outcome.out, console)
