"""The report's operating-point section: the threshold chosen on validation, its specificity
against the floor, calibration error and reliability diagrams per split, per-class recall."""

from __future__ import annotations

from typing import Any

from server.report import figures
from server.report.html import Section, image, missing, num, paragraph, pct, table
from server.report.sources import Workdir, read_json

__all__ = ["calibration_section"]

_SPLITS = {"val": "validation", "test": "unseen site"}
_ROLES = ("teacher", "student")


def _point_text(op: dict[str, Any], source: str) -> str:
    text = f"Operating point ({source}), chosen on the validation split only: refer when P(refer) "
    text += f">= {num(op.get('referral_threshold'), 4)}"
    if "temperature" in op:
        text += (
            f" (calibrated P(refer) >= {num(op.get('calibrated_threshold'))}, temperature "
            f"{num(op.get('temperature'), 2)}); validation sensitivity "
            f"{pct(op.get('validation_sensitivity'))} for a target of "
            f"{pct(op.get('target_sensitivity'), 0)}, specificity "
            f"{pct(op.get('validation_specificity'))} against a floor of "
            f"{pct(op.get('specificity_floor'), 0)}."
        )
    return text


def _operating_point(metrics: dict[str, Any] | None, report: dict[str, Any] | None) -> list[str]:
    if report is not None and "referral_threshold" in report.get("operating_point", {}):
        op, source = report["operating_point"], "the exported student"
    elif metrics is not None and "operating_point" in metrics.get("student", {}):
        op, source = metrics["student"]["operating_point"], "the student"
    else:
        return []
    parts = [paragraph(_point_text(op, source))]
    if op.get("warning"):
        parts.append(paragraph(f"Warning: {op['warning']}.", "verdict kept"))
    elif "specificity_floor" in op:
        parts.append(paragraph("The target sensitivity keeps the specificity floor.", "verdict ok"))
    return parts


def _calibration_rows(
    metrics: dict[str, Any],
) -> tuple[list[list[object]], dict[str, dict[str, Any]]]:
    rows: list[list[object]] = []
    curves: dict[str, dict[str, Any]] = {}
    for role in _ROLES:
        entry = metrics.get(role)
        calibration = entry.get("calibration", {}) if isinstance(entry, dict) else {}
        for split, cal in calibration.items():
            name = f"{role}, {_SPLITS.get(split, split)}"
            ece = [num(cal.get(k, {}).get("ece")) for k in ("before", "after")]
            rows.append([name, num(cal.get("temperature"), 2), *ece])
            curves[name] = cal
    return rows, curves


def _recall_rows(metrics: dict[str, Any] | None, report: dict[str, Any] | None) -> list[list[str]]:
    rows: list[list[str]] = []
    for role in _ROLES:
        entry = (metrics or {}).get(role)
        for split, label in _SPLITS.items():
            m = entry.get(split) if isinstance(entry, dict) else None
            recalls = {k[7:-1]: v for k, v in (m or {}).items() if k.startswith("recall[")}
            if recalls:
                cells = (f"{k} {pct(v.get('value'))}" for k, v in recalls.items())
                rows.append([f"{role} (PyTorch), {label}", " · ".join(cells)])
    for precision, entry in (report or {}).get("precisions", {}).items():
        recall = entry.get("heldout", {}).get("recall")
        if recall:
            cells = (f"{k} {num(v, 1)}%" for k, v in recall.items())
            rows.append([f"student {precision} (ONNX Runtime), held-out", " · ".join(cells)])
    return rows


def calibration_section(work: Workdir) -> Section:
    """The operating point (and its warning), ECE before and after temperature scaling per
    split with reliability diagrams, and each class's recall."""
    title = "Operating point and calibration"
    metrics = read_json(work.student / "metrics.json")
    report = read_json(work.export / "export.json")
    parts = _operating_point(metrics, report)
    rows, curves = _calibration_rows(metrics or {})
    if rows:
        parts.append(
            paragraph(
                "Expected calibration error (15 equal-width bins) of P(refer) against the "
                "referral truth, raw and after temperature scaling fitted on validation; "
                "the unseen site is never used to fit it."
            )
        )
        parts.append(table(["model, split", "temperature", "ECE raw", "ECE calibrated"], rows))
        parts.append(image(figures.reliability_png(curves), "reliability diagrams per split"))
    recall = _recall_rows(metrics, report)
    if recall:
        parts.append(paragraph("Recall of each class at the operating point:"))
        parts.append(table(["model, split", "recall per class"], recall))
    if not parts:
        detail = f"no operating point or calibration in {work.student / 'metrics.json'} or "
        detail += f"{work.export / 'export.json'}"
        return Section("calibration", title, missing("calibration", detail))
    return Section("calibration", title, "\n".join(parts))
