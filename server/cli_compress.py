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
    from server.compress.config import load_compress_config
    from server.compress.pipeline import compress
    from server.progress import progress_reporter
    from server.settings import ConfigError

    try:
        cfg = load_compress_config(config)
        with progress_reporter(console) as report:
            outcome = compress(cfg, log=console.print, report=report, resume=resume)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    r = outcome.report
    student = r["student"]
    console.print(
        f"[bold]compressed[/bold]: {student['parameters']:,} parameters"
        + (f" (1/{1 / r['parameter_ratio']:.1f} of the teacher)" if "parameter_ratio" in r else "")
        + f", val accuracy {student['val']['accuracy']['value']:.3f}"
    )
    for step in r["steps"]:
        console.print(
            f"  {step['index']}. {step['name']:<16} {step['parameters']:>10,} parameters  "
            f"val acc {step['metrics'].get('accuracy', float('nan')):.3f}"
        )
    console.print(f"model: {outcome.checkpoint}")
    for name, path in r["files"].items():
        console.print(f"{name}: {path}")
    console.print(f"report: {outcome.out / 'report.json'}")
