"""One-screen summaries of runs, printed with rich."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from models import METRIC_NAMES


def _fmt(m: dict[str, float] | None) -> str:
    if m is None:
        return "-"
    if m["low"] != m["low"]:  # nan: no interval
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def print_run_summary(metrics: dict[str, Any], out: Path, console: Console | None = None) -> None:
    """Teacher vs student on every metric (95% CIs), parameters and file sizes, then paths."""
    console = console or Console()
    name = metrics["name"]
    roles = list(dict.fromkeys(r for r in ("teacher", name) if r in metrics))
    split = "test" if "test" in metrics[name] else "val"
    table = Table(title=f"{name}: {split} split" + (" (unseen site)" if split == "test" else ""))
    table.add_column("metric")
    for r in roles:
        table.add_column(r, justify="right")
    paired = metrics.get("paired", {}).get("student_minus_teacher")
    if paired:
        table.add_column(f"{name} - teacher (paired)", justify="right")
    # the task's metrics, in the usual order (a task without a quality head has no gradability)
    shown = [k for k in metrics[name][split] if k not in METRIC_NAMES]
    for k in [*(k for k in METRIC_NAMES if k in metrics[name][split]), *shown]:
        row = [k] + [_fmt(metrics[r][split].get(k)) for r in roles]
        if paired:
            row.append(_fmt(paired.get(k)))
        table.add_row(*row)
    table.add_row(
        "parameters",
        *[f"{metrics[r]['parameters']:,}" for r in roles],
        *(
            [f"{metrics[name]['parameters'] / metrics['teacher']['parameters']:.3f}x"]
            if paired
            else []
        ),
    )
    table.add_row(
        "referral threshold",
        *[f"{metrics[r].get('referral_threshold', 0.5):.3f}" for r in roles],
        *([""] if paired else []),
    )
    table.add_row(
        "file size",
        *[_size(metrics[r].get("file_bytes", 0)) for r in roles],
        *([""] if paired else []),
    )
    console.print(table)
    t = metrics.get("training", {})
    if t:
        console.print(
            f"trained in {t['seconds']:.0f}s; monitor alerts: {t['alerts']}"
            + (f"; search chose {metrics['search']}" if "search" in metrics else "")
        )
    console.print(
        f"run directory: [bold]{out}[/bold] (metrics.json, monitor.jsonl, "
        f"{name}.safetensors, plots/)"
    )
