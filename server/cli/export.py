"""``fovea export RUN_DIR``: a distilled student to ONNX at every precision, checked at each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from server.cli.output import console, fail


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
        ExportConfigError,
        ExportError,
        ExportInputError,
        export,
        load_export_config,
        parse_export_config,
        print_export_summary,
    )

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
        fail(str(e))
        return
    print_export_summary(result.report, str(result.out), console)
