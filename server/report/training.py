"""Report sections about the models: teacher vs student vs each precision, monitors, sites."""

from __future__ import annotations

from typing import Any

from models import DR_GRADING
from server.report import figures
from server.report.evaluation import SiteResult, pooled
from server.report.html import Section, image, missing, num, paragraph, pct, table
from server.report.sources import Workdir, read_json, read_jsonl

__all__ = ["models_section", "monitor_section", "sites_section"]

_PRECISION_NAMES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8", "int8dyn": "dynamic INT8"}


def _estimate(m: dict[str, Any] | None) -> str | None:
    """A metrics.json estimate ({value, low, high}, fractions) as a percentage with its CI."""
    if not isinstance(m, dict):
        return None
    value, low, high = pct(m.get("value")), pct(m.get("low")), pct(m.get("high"))
    if value is None:
        return None
    return f"{value} [{low}, {high}]" if low and high else value


def recall_text(r: SiteResult) -> str:
    """Each class's recall, short class names first: ``no 98.0% · mild 40.0% · ...``."""
    return " · ".join(f"{c.split()[0]} {pct(v) or '—'}" for c, v in r.recall.items())


def _kb(n: object) -> str | None:
    return f"{float(n) / 1e3:,.0f} kB" if isinstance(n, int | float) else None


def _trained_rows(metrics: dict[str, Any]) -> tuple[str, list[list[object]], list[dict[str, Any]]]:
    split = "test" if "test" in metrics.get("student", {}) else "val"
    rows: list[list[object]] = []
    bars: list[dict[str, Any]] = []
    for role, label in (("teacher", "teacher (PyTorch)"), ("student", "student (PyTorch)")):
        entry = metrics.get(role)
        if not isinstance(entry, dict):
            continue
        m = entry.get(split, {})
        rows.append(
            [
                label,
                _estimate(m.get("accuracy")),
                _estimate(m.get("referable_sensitivity")),
                _estimate(m.get("referable_specificity")),
                num(m.get("kappa", {}).get("value")),
                _kb(entry.get("file_bytes")),
                None,
                None,
            ]
        )
        accuracy = m.get("accuracy", {}).get("value")
        bars.append(
            {
                "name": role,
                "size_kb": (entry.get("file_bytes") or 0) / 1e3 or None,
                "accuracy": 100 * accuracy if accuracy is not None else None,
                "latency_ms": None,
            }
        )
    return split, rows, bars


def _export_rows(report: dict[str, Any]) -> tuple[list[list[object]], list[dict[str, Any]]]:
    rows: list[list[object]] = []
    bars: list[dict[str, Any]] = []
    for precision, entry in report.get("precisions", {}).items():
        held, latency = entry.get("heldout", {}), entry.get("latency", {})
        label = f"student {_PRECISION_NAMES.get(precision, precision)} (ONNX Runtime)"
        throughput = latency.get("throughput_img_s")
        rows.append(
            [
                label,
                num(held.get("accuracy"), 1),
                num(held.get("referable_sensitivity"), 1),
                num(held.get("referable_specificity"), 1),
                None,
                _kb(entry.get("size_bytes")),
                num(latency.get("latency_ms_batch1"), 2),
                f"{throughput:,.0f}" if isinstance(throughput, int | float) else None,
            ]
        )
        bars.append(
            {
                "name": precision,
                "accuracy": held.get("accuracy"),
                "size_kb": (entry.get("size_bytes") or 0) / 1e3 or None,
                "latency_ms": latency.get("latency_ms_batch1"),
            }
        )
    return rows, bars


def _sample_table(evaluated: dict[str, dict[str, SiteResult]]) -> list[str]:
    """Each precision pooled over this report's sample of every site, with per-class recall."""
    parts: list[str] = []
    sample = [
        [
            f"student {_PRECISION_NAMES.get(p, p)}",
            pct(r.accuracy),
            pct(r.sensitivity),
            pct(r.specificity),
            num(r.kappa),
            r.n,
            recall_text(r),
        ]
        for p, r in ((p, pooled(sites)) for p, sites in evaluated.items())
    ]
    parts.append(
        paragraph(
            "Each precision on this report's sample of every site (gradable "
            "images), computed now with ONNX Runtime:"
        )
    )
    parts.append(
        table(
            [
                "model",
                "accuracy",
                "referable sensitivity",
                "referable specificity",
                "kappa",
                "images",
                "recall per class",
            ],
            sample,
        )
    )
    return parts


def models_section(work: Workdir, evaluated: dict[str, dict[str, SiteResult]] | None) -> Section:
    """Teacher vs student vs each exported precision: accuracy, sensitivity, specificity, kappa,
    size and latency."""
    title = "Teacher, student and each precision"
    metrics = read_json(work.student / "metrics.json")
    report = read_json(work.export / "export.json")
    if metrics is None and report is None:
        detail = f"{work.student / 'metrics.json'} and {work.export / 'export.json'} not found"
        return Section("models", title, missing("distillation and export", detail))
    head = [
        "model",
        "accuracy",
        "referable sensitivity",
        "referable specificity",
        "kappa",
        "size",
        "batch-1 ms",
        "img/s (batch 32)",
    ]
    parts: list[str] = []
    rows: list[list[object]] = []
    bars: list[dict[str, Any]] = []
    if metrics is not None:
        split, rows, bars = _trained_rows(metrics)
        unseen = " (a site unseen in training)" if split == "test" else ""
        parts.append(
            paragraph(f"PyTorch rows: the {split} split{unseen}, 95% bootstrap intervals.")
        )
    else:
        parts.append(missing("distillation", f"{work.student / 'metrics.json'} not found"))
    if report is not None:
        export_rows, export_bars = _export_rows(report)
        rows += export_rows
        bars += export_bars
        held = report.get("heldout", {})
        threshold = report.get("operating_point", {}).get("referral_threshold")
        parts.append(
            paragraph(
                f"ONNX Runtime rows (%): {held.get('images', '?')} images of the "
                f"{held.get('split', '?')} split, referral at probability "
                f"{num(threshold) or '?'}; latency on the export machine."
            )
        )
    else:
        parts.append(missing("export", f"{work.export / 'export.json'} not found"))
    parts.append(table(head, rows))
    if bars:
        parts.append(image(figures.models_png(bars), "accuracy, size and latency per model"))
    if evaluated:
        parts += _sample_table(evaluated)
    return Section("models", title, "\n".join(parts))


def monitor_section(work: Workdir) -> Section:
    """The distillation monitors per epoch, with each alert and what it changed."""
    title = "Distillation monitors"
    path = work.student / "monitor.jsonl"
    records = read_jsonl(path)
    evals = [r for r in records or [] if r.get("record") == "eval"]
    if not evals:
        return Section("monitor", title, missing("distillation", f"{path} not found or empty"))
    alerts = [r for r in records or [] if r.get("record") == "event" and r.get("event") == "alert"]
    parts = [image(figures.monitor_png(evals, alerts), "monitor curves with alerts marked")]
    if alerts:
        rows = [
            [
                a.get("epoch"),
                num(a.get("retention")),
                num(a.get("threshold")),
                a.get("action", ""),
                ", ".join(
                    f"{k} {v.get('from')}→{v.get('to')}" for k, v in a.get("changes", {}).items()
                ),
            ]
            for a in alerts
        ]
        parts.append(table(["epoch", "retention", "threshold", "action", "changes"], rows))
    else:
        parts.append(paragraph("No alerts: knowledge retention stayed above its threshold."))
    return Section("monitor", title, "\n".join(parts))


def sites_section(
    work: Workdir, evaluated: dict[str, dict[str, SiteResult]] | None, problem: str | None
) -> Section:
    """Confusion matrices of the student (fp32 ONNX) on each site's sample, in its task's
    classes."""
    title = "Confusion matrices per site"
    if problem:
        return Section("sites", title, missing("per-site evaluation", problem))
    results = (evaluated or {}).get("fp32") or next(iter((evaluated or {}).values()), None)
    if not results:
        return Section("sites", title, missing("per-site evaluation", "no exported model or data"))
    held_out = work.held_out_site()
    task = next(iter(results.values())).task
    rows_are = "true ICDR grade" if task == DR_GRADING else f"true class ({task.name})"
    rows = [
        [
            site + (" (unseen in training)" if site == held_out else ""),
            r.n,
            pct(r.accuracy),
            pct(r.sensitivity),
            pct(r.specificity),
            num(r.kappa),
            recall_text(r),
        ]
        for site, r in results.items()
    ]
    parts = [
        paragraph(
            "The exported student (fp32, ONNX Runtime) on a sample of each site's gradable "
            f"images; referral at the export's operating point. Rows: {rows_are}."
        ),
        image(figures.confusion_png(results, held_out), "confusion matrix per site"),
        table(
            [
                "site",
                "images",
                "accuracy",
                "referable sensitivity",
                "referable specificity",
                "kappa",
                "recall per class",
            ],
            rows,
        ),
    ]
    return Section("sites", title, "\n".join(parts))
