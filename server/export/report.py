"""``export.json`` and the one-screen table printed after an export."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

SCHEMA_VERSION = 1
EXPORT_FILE = "export.json"


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def export_table(report: dict[str, Any]) -> Table:
    """Per precision: size, parity, held-out accuracy and referral metrics, ORT speed."""
    split = report["heldout"]["split"]
    table = Table(title=f"export: held-out {split} ({report['heldout']['images']} images)")
    for col in (
        "precision",
        "size",
        "parity |err|",
        "accuracy %",
        "Δ vs fp32",
        "sens %",
        "spec %",
        "batch-1 ms",
        "batch-32 img/s",
    ):
        table.add_column(col, justify="left" if col == "precision" else "right")
    for name, p in report["precisions"].items():
        parity = p["parity"]
        mark = "" if parity["passed"] else " [red](fail)[/red]"
        drop = p["accuracy_drop"]
        ok = "" if p["within_budget"] else " [red](over budget)[/red]"
        speed = p["latency"]
        table.add_row(
            name,
            _mib(p["size_bytes"]),
            f"{parity['max_abs_error']:.2g}{mark}",
            _pct(p["heldout"]["accuracy"]),
            f"{-drop:+.2f}{ok}",
            _pct(p["heldout"]["referable_sensitivity"]),
            _pct(p["heldout"]["referable_specificity"]),
            f"{speed['latency_ms_batch1']:.2f}",
            f"{speed['throughput_img_s']:.0f}",
        )
    return table


def print_export_summary(report: dict[str, Any], out: str, console: Console) -> None:
    """The table, the operating point and calibration, the INT8 choice, the engine status and
    where everything went."""
    console.print(export_table(report))
    for line in operating_point_lines(report):
        console.print(line)
    int8 = report.get("int8")
    if int8 and int8.get("method") == "qat":
        console.print(f"INT8: the QAT model {int8['source']} (trained quantised, not calibrated)")
    elif int8:
        kept = ", ".join(int8["excluded"]) or "none"
        console.print(
            f"INT8: {int8['method']} calibration (by method: "
            + ", ".join(f"{m} {a:.2f}%" for m, a in int8["by_method"].items())
            + f"); layers kept in float: {kept}"
        )
    cache = (int8 or {}).get("calibration_cache")
    if cache:
        gap = "" if cache["complete"] else f", [red]{len(cache['missing'])} without a range[/red]"
        console.print(
            f"INT8 calibration cache: {cache['covered']} of {cache['needed']} activations of "
            f"model.fp32.onnx{gap}"
        )
    for p in report["precisions"].values():
        if p["speed_note"]:
            console.print(f"[yellow]note:[/yellow] {p['speed_note']}")
    for engine in report["engines"]:
        profile = f" ({engine['profile']})" if engine.get("profile") else ""
        console.print(f"TensorRT {engine['precision']}{profile}: {engine['status']}")
        if engine.get("warning"):
            console.print(f"[yellow]  {engine['warning']}[/yellow]")
    lint = report["lint"]
    errors = [i for i in lint if i["severity"] == "error"]
    console.print(
        f"TensorRT 8.5 lint: {len(errors)} error(s), {len(lint) - len(errors)} warning(s)"
        + "".join(f"\n  {i['node']}: {i['message']}" for i in errors)
    )
    console.print(f"wrote [bold]{out}[/bold] (export.json, recipe.json, golden.npz, ...)")


def _val(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def operating_point_lines(report: dict[str, Any]) -> list[str]:
    """The operating point (chosen on validation), its warning, and the fp32 model's per-class
    recall and calibration error on the held-out split."""
    op = report.get("operating_point") or {}
    if "referral_threshold" not in op:
        return []
    lines = [
        f"operating point (validation): refer at P(refer) >= {op['referral_threshold']:.4f}"
        + (
            f" (calibrated {op['calibrated_threshold']:.3f}, temperature "
            f"{op['temperature']:.2f}); sensitivity {_val(op.get('validation_sensitivity'))} "
            f"(target {op['target_sensitivity']:.0%}), specificity "
            f"{_val(op.get('validation_specificity'))} (floor {op['specificity_floor']:.0%})"
            if "temperature" in op
            else ""
        )
    ]
    if op.get("warning"):
        lines.append(f"[yellow]warning:[/yellow] {op['warning']}")
    heldout = report.get("precisions", {}).get("fp32", {}).get("heldout", {})
    if heldout.get("recall"):
        recall = ", ".join(f"{k} {v:.1f}" for k, v in heldout["recall"].items())
        lines.append(f"fp32 recall per class, held-out %: {recall}")
    cal = heldout.get("calibration")
    if cal:
        lines.append(
            f"fp32 calibration error (ECE, P(refer)), held-out: {cal['before']['ece']:.3f} raw, "
            f"{cal['after']['ece']:.3f} at temperature {cal['temperature']:.2f}"
        )
    return lines
