"""``fovea teacher train`` and ``fovea distill``: the training commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from server.cli.output import console, fail

teacher_app = typer.Typer(no_args_is_help=True, help="The teacher model.")


def _run(cfg: object, name: str) -> None:
    from server.console import print_run_summary, progress_reporter
    from server.distill import DistillConfig, run

    assert isinstance(cfg, DistillConfig)
    try:
        with progress_reporter(console) as report:
            outcome = run(cfg, name=name, log=console.print, report=report)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
        return
    if outcome.metrics:  # empty on the other ranks of a torchrun job
        print_run_summary(outcome.metrics, outcome.out, console)


@teacher_app.command("train")
def teacher_train(
    data: Annotated[Path, typer.Option(help="dataset directory (fovea data synth)")] = Path(
        "data/synth"
    ),
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/teacher"),
    model: Annotated[
        str,
        typer.Option(
            help="family or preset, or a source: module:pkg.mod:factory, hf:CONFIG_OR_DIR, "
            "timm:NAME, torchvision:NAME"
        ),
    ] = "resnet-teacher",
    weights: Annotated[
        Path | None, typer.Option(help="pretrained weights (.safetensors or .pth) to start from")
    ] = None,
    train_sites: Annotated[
        str, typer.Option(help="comma-separated sites to train on")
    ] = "site-a,site-b,site-c,site-d",
    test_site: Annotated[
        str, typer.Option(help="a site never trained on, to test on ('' for none)")
    ] = "site-e",
    epochs: Annotated[int, typer.Option(min=1)] = 6,
    lr: Annotated[float, typer.Option(help="peak learning rate (> 0)")] = 3e-3,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train a teacher on labels (writes teacher.safetensors + teacher.json)."""
    from server.distill import parse_config
    from server.training import ConfigError

    try:
        cfg = parse_config(
            {
                "teacher": None,
                "student": {"name": model, "weights": str(weights) if weights else None},
                "data": {
                    "dir": str(data),
                    "train_sites": [x.strip() for x in train_sites.split(",") if x.strip()],
                    "test_site": test_site or None,
                },
                "train": {"epochs": epochs, "lr": lr},
                "monitor": {"enabled": False},
                "out": str(out),
                "seed": seed,
            },
            "fovea teacher train",
        )
    except ConfigError as e:
        fail(
            str(e)
            .replace("train.lr", "--lr")
            .replace("train.epochs", "--epochs")
            .replace("student.name", "--model")
            .replace("student.weights", "--weights")
            .replace("data.train_sites", "--train-sites")
            .replace("data.test_site", "--test-site")
        )
        return
    _run(cfg, "teacher")


def distill(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/distill.yaml)")],
    out: Annotated[Path | None, typer.Option(help="override the config's output directory")] = None,
) -> None:
    """Distill a student from a teacher as CONFIG says, writing a run directory."""
    from server.distill import load_config
    from server.training import ConfigError

    try:
        cfg = load_config(config)
    except ConfigError as e:
        fail(str(e))
        return
    if out is not None:
        cfg = cfg.model_copy(update={"out": out})
    _run(cfg, "student")
