"""The compression report: a Markdown table per step and the size/accuracy curve as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

REPORT_MD = "report.md"
CURVE_PNG = "curve.png"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _metric(entry: dict[str, Any], split: str, key: str) -> float | None:
    value = entry.get(split, {}).get(key, {})
    return value.get("value") if isinstance(value, dict) else None


def markdown(result: dict[str, Any]) -> str:
    """The report as Markdown: headline, curve table, steps."""
    lines = ["# Compression report", ""]
    student = result["student"]
    teacher = result.get("teacher")
    split = "test" if "test" in student else "val"
    lines += [
        f"| model | parameters | val accuracy | {split} accuracy | {split} referable sensitivity |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, entry in (("teacher", teacher), ("student", student)):
        if entry:
            lines.append(
                f"| {name} | {entry['parameters']:,} | {_pct(_metric(entry, 'val', 'accuracy'))} "
                f"| {_pct(_metric(entry, split, 'accuracy'))} "
                f"| {_pct(_metric(entry, split, 'referable_sensitivity'))} |"
            )
    if "parameter_ratio" in result:
        lines += ["", f"Parameters: 1/{1 / result['parameter_ratio']:.1f} of the teacher."]
    if "decay" in result:
        lines.append(
            f"Student/teacher on {result['paired']['split']}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in result["decay"].items())
        )
    lines += [
        "",
        "## Curve (validation)",
        "",
        "| step | point | parameters | latency ms (torch CPU, batch 1) | accuracy | kappa |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in result["curve"]:
        latency = f"{p['latency_ms']:.2f}" if "latency_ms" in p else "-"
        lines.append(
            f"| {p.get('step', '-')} | {p['label']} | {p['parameters']:,} | {latency} "
            f"| {_pct(p.get('accuracy'))} | {p.get('kappa', float('nan')):.3f} |"
        )
    lines += [
        "",
        "## Steps",
        "",
        "| # | name | kind | parameters | val accuracy | seconds |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for r in result["steps"]:
        lines.append(
            f"| {r['index']} | {r['name']} | {r['kind']} | {r['parameters']:,} "
            f"| {_pct(r['metrics'].get('accuracy'))} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_curve(curve: list[dict[str, Any]], path: Path) -> Path:
    """Validation accuracy against parameters (log scale) and latency, one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    params = [p["parameters"] for p in curve]
    acc = [100 * p.get("accuracy", float("nan")) for p in curve]
    axes[0].plot(params, acc, marker="o")
    axes[0].set_xscale("log")
    axes[0].invert_xaxis()
    axes[0].set_xlabel("parameters")
    axes[0].set_ylabel("validation accuracy (%)")
    for p, a in zip(curve, acc, strict=True):
        axes[0].annotate(p["label"], (p["parameters"], a), fontsize=6)
    lat = [p.get("latency_ms", float("nan")) for p in curve]
    axes[1].plot(lat, acc, marker="o")
    axes[1].set_xlabel("latency (ms, torch CPU, batch 1)")
    axes[1].set_ylabel("validation accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``report.md`` and ``curve.png`` into ``out``; returns their paths."""
    md = out / REPORT_MD
    md.write_text(markdown(result))
    return {"markdown": md, "curve": plot_curve(result["curve"], out / CURVE_PNG)}


def print_compress_summary(report: dict[str, Any], out: Path, console: Console) -> None:
    """The run in a few lines: size against the teacher, each step, where the files are."""
    student = report["student"]
    ratio = report.get("parameter_ratio")
    console.print(
        f"[bold]compressed[/bold]: {student['parameters']:,} parameters"
        + (f" (1/{1 / ratio:.1f} of the teacher)" if ratio else "")
        + f", val accuracy {student['val']['accuracy']['value']:.3f}"
    )
    for step in report["steps"]:
        console.print(
            f"  {step['index']}. {step['name']:<16} {step['parameters']:>10,} parameters  "
            f"val acc {step['metrics'].get('accuracy', float('nan')):.3f}"
        )
    console.print(f"model: {out / 'student.json'}")
    for name, path in report.get("files", {}).items():
        console.print(f"{name}: {path}")
    console.print(f"report: {out / 'report.json'}")
