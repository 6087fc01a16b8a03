"""The ``fovea`` command: the workstation side of the loop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from models.synth.profiles import SITES
from server import cli_compress, cli_federation, cli_flash, cli_fleet, cli_keys, cli_report

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fovea: distill, export, deploy and federate retinal screening models.",
)
data_app = typer.Typer(no_args_is_help=True, help="Datasets.")
teacher_app = typer.Typer(no_args_is_help=True, help="The teacher model.")
app.add_typer(data_app, name="data")
app.add_typer(teacher_app, name="teacher")
app.command("flash")(cli_flash.flash_command)
app.add_typer(cli_keys.keys_app, name="keys")
app.add_typer(cli_keys.bundle_app, name="bundle")
app.add_typer(cli_fleet.fleet_app, name="fleet")
app.add_typer(cli_federation.federation_app, name="federation")
app.command("report")(cli_report.report_command)
app.command("compress")(cli_compress.compress_command)
console = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("data/synth"),
    sites: Annotated[str, typer.Option(help="comma-separated site names")] = ",".join(SITES),
    per_site: Annotated[int, typer.Option(min=1, help="images per site")] = 2000,
    size: Annotated[int, typer.Option(min=32, max=1024, help="image side in pixels")] = 64,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Generate synthetic fundus photographs, one file per site."""
    from server.distill.data import synthesise

    names = [s.strip() for s in sites.split(",") if s.strip()]
    try:
        synthesise(out, sites=names, per_site=per_site, size=size, seed=seed, progress=True)
    except ValueError as e:
        _fail(str(e))
    console.print(f"wrote {len(names)} sites to [bold]{out}[/bold]")


def _run(cfg: object, name: str) -> None:
    from server.distill.config import DistillConfig
    from server.distill.run import run
    from server.progress import progress_reporter
    from server.summary import print_run_summary

    assert isinstance(cfg, DistillConfig)
    try:
        with progress_reporter(console) as report:
            outcome = run(cfg, name=name, log=console.print, report=report)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    if outcome.metrics:  # empty on the other ranks of a torchrun job
        print_run_summary(outcome.metrics, outcome.out, console)


@teacher_app.command("train")
def teacher_train(
    data: Annotated[Path, typer.Option(help="dataset directory (fovea data synth)")] = Path(
        "data/synth"
    ),
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/teacher"),
    model: Annotated[str, typer.Option(help="model family or preset")] = "resnet-teacher",
    epochs: Annotated[int, typer.Option(min=1)] = 6,
    lr: Annotated[float, typer.Option(help="peak learning rate (> 0)")] = 3e-3,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train a teacher on labels (writes teacher.safetensors + teacher.json)."""
    from server.distill.config import ConfigError, parse_config

    try:
        cfg = parse_config(
            {
                "teacher": None,
                "student": {"name": model},
                "data": {"dir": str(data)},
                "train": {"epochs": epochs, "lr": lr},
                "monitor": {"enabled": False},
                "out": str(out),
                "seed": seed,
            },
            "fovea teacher train",
        )
    except ConfigError as e:
        _fail(str(e).replace("train.lr", "--lr").replace("train.epochs", "--epochs"))
        return
    _run(cfg, "teacher")


@app.command("distill")
def distill(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/distill.yaml)")],
    out: Annotated[Path | None, typer.Option(help="override the config's output directory")] = None,
) -> None:
    """Distill a student from a teacher as CONFIG says, writing a run directory."""
    from server.distill.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as e:
        _fail(str(e))
        return
    if out is not None:
        cfg = cfg.model_copy(update={"out": out})
    _run(cfg, "student")


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option(help="where data and runs go")] = Path(".fovea/demo"),
    fresh: Annotated[bool, typer.Option(help="ignore cached stages")] = False,
) -> None:
    """The whole loop on built-in defaults, from synthetic data to a rolled-out new bundle."""
    from server.demo import run_demo

    try:
        run_demo(workdir, fresh=fresh, console=console)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a `fovea distill` run directory")],
    out: Annotated[Path | None, typer.Option(help="export directory (default RUN_DIR/export)")] = (
        None
    ),
    budget: Annotated[
        float | None, typer.Option(help="INT8 accuracy budget in points (default 1.0)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML export config (see configs/export.yaml)")
    ] = None,
    precisions: Annotated[
        str | None, typer.Option(help="comma-separated: fp32,fp16,int8,int8dyn")
    ] = None,
) -> None:
    """Export a distilled student to ONNX fp32/fp16/INT8 (+ TensorRT recipe), checked at each."""
    from server.export import (
        ExportConfig,
        ExportError,
        ExportInputError,
        export,
        load_export_config,
        parse_export_config,
    )
    from server.export.config import ExportConfigError
    from server.export.report import print_export_summary

    try:
        cfg = load_export_config(config) if config else ExportConfig()
        overrides: dict[str, object] = {}
        if budget is not None:
            overrides["budget"] = budget
        if precisions is not None:
            overrides["precisions"] = [p.strip() for p in precisions.split(",") if p.strip()]
        if overrides:
            cfg = parse_export_config({**cfg.model_dump(), **overrides}, "command line")
        with console.status("exporting ...") as status:
            result = export(run_dir, out, cfg, log=lambda s: status.update(s))
    except (ExportConfigError, ExportInputError, ExportError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    print_export_summary(result.report, str(result.out), console)


def main() -> None:
    """Entry point of the ``fovea`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted; finished epochs are checkpointed, run again to resume")
        sys.exit(130)
