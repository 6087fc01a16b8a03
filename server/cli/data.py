"""``fovea data synth`` and ``fovea data prepare``: the datasets training reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from models.synth import SITES
from server.cli.output import console, fail

if TYPE_CHECKING:
    from server.training import PrepareResult

data_app = typer.Typer(no_args_is_help=True, help="Datasets.")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("data/synth"),
    sites: Annotated[str, typer.Option(help="comma-separated site names")] = ",".join(SITES),
    per_site: Annotated[int, typer.Option(min=1, help="images per site")] = 2000,
    size: Annotated[int, typer.Option(min=32, max=1024, help="image side in pixels")] = 64,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Generate synthetic fundus photographs, one file per site."""
    from server.training import synthesise

    names = [s.strip() for s in sites.split(",") if s.strip()]
    try:
        synthesise(out, sites=names, per_site=per_site, size=size, seed=seed, progress=True)
    except ValueError as e:
        fail(str(e))
    console.print(f"wrote {len(names)} sites to [bold]{out}[/bold]")


_LAYOUT_HELP = "auto, eyepacs, aptos, messidor2, idrid, folders, csv or dicom"


@data_app.command("prepare")
def data_prepare(
    source: Annotated[Path, typer.Argument(help="the dataset's folder (images, labels)")],
    out: Annotated[Path, typer.Option(help="dataset directory to write into")],
    size: Annotated[
        int | None, typer.Option(min=16, max=1024, help="image side (default: the task's)")
    ] = None,
    layout: Annotated[str, typer.Option(help=_LAYOUT_HELP)] = "auto",
    site: Annotated[str, typer.Option(help="site name (default: the layout's)")] = "",
    task: Annotated[
        Path | None, typer.Option(help="task spec YAML (default: built-in DR grading)")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="labels CSV (layout csv)")] = None,
    image_column: Annotated[str, typer.Option(help="CSV column: image file")] = "image",
    label_column: Annotated[str, typer.Option(help="CSV column: label")] = "label",
    patient_column: Annotated[str, typer.Option(help="CSV column: patient id")] = "patient",
    eye_column: Annotated[str, typer.Option(help="CSV column: eye")] = "eye",
    skip_bad: Annotated[bool, typer.Option(help="skip and count bad image files")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="decoding processes")] = 4,
) -> None:
    """Turn a public dataset, class folders, a CSV + images or DICOM into a training site.

    Writes OUT/<site>.npz and records it in OUT/dataset.json; run again to resume.
    """
    from models import DR_GRADING, TaskSpecError, load_task
    from models.datasets import CsvColumns
    from server.console import progress_reporter
    from server.training import PrepareOptions, prepare_dataset

    try:
        spec = load_task(task) if task else DR_GRADING
        options = PrepareOptions(
            source=source,
            out=out,
            size=size or spec.input.size,
            layout=layout,
            site=site,
            task=spec,
            csv=csv,
            columns=CsvColumns(image_column, label_column, patient_column, eye_column),
            skip_bad=skip_bad,
            workers=workers,
        )
        with progress_reporter(console) as report:
            result = prepare_dataset(options, report)
    except (TaskSpecError, ValueError, OSError) as e:
        fail(str(e))
    _summary(result, spec.name)


def _summary(result: PrepareResult, task: str) -> None:
    """One screen: what was written, the class counts, what was skipped, how to train on it."""
    from rich.markup import escape

    say = console.print
    say(
        f"prepared site [bold]{escape(result.site)}[/bold] ({result.layout}, task {task}): "
        f"{result.images} images of {result.patients} patients -> "
        f"[bold]{escape(str(result.path))}[/bold]",
        soft_wrap=True,
    )
    say(
        escape("  classes: " + ", ".join(f"{k} {n}" for k, n in result.counts.items())),
        soft_wrap=True,
    )
    if result.reused:
        say(f"  resumed: {result.reused} images taken from an earlier run")
    if result.skipped:
        say(f"  [yellow]skipped {len(result.skipped)}[/yellow]:")
        for what, why in result.skipped[:5]:
            say(escape("    " + (why if what in why else f"{what}: {why}")), soft_wrap=True)
        if len(result.skipped) > 5:
            say(escape(f"    ... all {len(result.skipped)} listed in {result.meta}"))
    say(escape(f"  recorded in {result.meta}"), soft_wrap=True)
    hint = f"data: {{dir: {result.path.parent}, train_sites: [{result.site}], test_site: null}}"
    say(escape(f"  train on it with: {hint}"), soft_wrap=True)
