"""The distillation benchmark's screening acceptance: each model at its own operating point
(chosen on its validation split), the student's sensitivity and specificity on the unseen site
against the target and floor, and student - teacher with paired intervals against -1.5 points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models import OperatingPoint, point_from_metrics
from models.nets import read_meta

TARGET_SENSITIVITY = 0.95
MARGIN_POINTS = 1.5
"""Student - teacher sensitivity and specificity may not fall below -1.5 points (the paired
interval's lower bound)."""


def point_of(checkpoint: Path) -> OperatingPoint:
    """The operating point a checkpoint recorded when it was scored on validation."""
    meta = read_meta(checkpoint)
    return point_from_metrics(meta.metrics, meta.task)


def _pt(e: dict[str, float]) -> str:
    return f"[{100 * e['low']:.1f}, {100 * e['high']:.1f}]"


def acceptance(
    seed_result: dict[str, Any], floor: float
) -> tuple[dict[str, bool], list[list[str]]]:
    """The verdicts and table rows of one seed (``student`` metrics and ``minus_teacher``
    paired differences, each ``{value, low, high}``)."""
    student = seed_result["student"]
    sens, spec = student["referable_sensitivity"], student["referable_specificity"]
    diff = {
        k: seed_result["minus_teacher"][f"referable_{k}"] for k in ("sensitivity", "specificity")
    }
    verdict = {
        "student_sensitivity_ok": sens["value"] >= TARGET_SENSITIVITY,
        "student_specificity_ok": spec["value"] >= floor,
        **{f"{k}_gap_ok": d["low"] >= -MARGIN_POINTS / 100 for k, d in diff.items()},
    }
    rows = [
        ["  student referable sensitivity", f"{100 * sens['value']:.1f}%", _pt(sens), ">= 95%"],
        ["  student referable specificity", f"{100 * spec['value']:.1f}%", _pt(spec)],
    ]
    rows[1].append(f">= {100 * floor:.0f}%")
    for k, d in diff.items():
        rows.append(
            [
                f"  {k}: student - teacher (paired)",
                f"{100 * d['value']:+.2f} pt",
                f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] pt",
                f"lower bound >= -{MARGIN_POINTS} pt",
            ]
        )
    rows.append(["  acceptance met", str(all(verdict.values())), "", "True"])
    return verdict, rows


def screening_rows(result: dict[str, Any], floor: float) -> list[list[str]]:
    """The table rows of the screening acceptance; adds each seed's ``acceptance`` verdicts to
    ``result["student_vs_teacher"]``."""
    teacher, tp = result["teacher"], result["teacher_operating_point"]
    rows = [
        [
            "teacher referable sensitivity / specificity (unseen site)",
            f"{100 * teacher['referable_sensitivity']['value']:.1f}% / "
            f"{100 * teacher['referable_specificity']['value']:.1f}%",
            f"threshold {tp['referral_threshold']:.3f}, T {tp['temperature']:.2f}",
            "",
        ]
    ]
    seeds = result["student_vs_teacher"]
    for s, v in seeds.items():
        v["acceptance"], seed_rows = acceptance(v, floor)
        rows.append([f"seed {s}: unseen site, own validation thresholds", "", "", ""])
        rows += seed_rows
    grades = [k for k in teacher if k.startswith("recall[")]
    names = ", ".join(k[7:-1] for k in grades)
    recall = " / ".join(f"{teacher[k]['value']:.2f}" for k in grades)
    rows.append(["teacher recall per grade (unseen site)", recall, names, ""])
    for s, v in seeds.items():
        recall = " / ".join(f"{v['student'][k]['value']:.2f}" for k in grades)
        rows.append([f"seed {s}: student recall per grade", recall, "", ""])
        if v["operating_point"]["warning"]:
            rows.append([f"seed {s}: operating point", v["operating_point"]["warning"], "", ""])
    return rows
