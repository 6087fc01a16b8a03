"""The compress_heads benchmark's table: one row per figure, for results/compress_heads.md."""

from __future__ import annotations

from typing import Any

Rows = list[list[str]]

HEADS = "heads keep 0.6"
HEAD_STAGES = (
    "student",
    "pruned_before_recovery",
    "pruned_recovered",
    "unpruned_same_extra_epochs",
)


def table(r: dict[str, Any]) -> Rows:
    """The rows (header first) for whichever of the three comparisons ``r`` holds."""
    rows = [["comparison", "what", "value"]]
    if "heads" in r:
        rows += _heads_rows(r["heads"])
    if "chain" in r:
        rows += _chain_rows(r["chain"])
    if "routing" in r:
        rows += _routing_rows(r["routing"])
    return rows


def _heads_rows(h: dict[str, Any]) -> Rows:
    acc = h["accuracy"]
    rows = [
        [
            HEADS,
            f"{k} val / test acc",
            f"{acc[k]['val']['accuracy']:.3f} / {acc[k]['test']['accuracy']:.3f}",
        ]
        for k in HEAD_STAGES
    ]
    rows.append(
        [
            HEADS,
            "heads, parameters",
            f"{sum(h['prune']['heads_before'])} -> {sum(h['prune']['heads_after'])}, "
            f"{h['prune']['parameters_before']} -> {h['prune']['parameters_after']}",
        ]
    )
    lat = h["latency"]
    for key in lat["pruned"]:
        rows.append(
            [
                HEADS,
                f"latency {key} unpruned / pruned",
                f"{lat['unpruned'][key]:.2f} / {lat['pruned'][key]:.2f}",
            ]
        )
    return rows


def _chain_rows(c: dict[str, Any]) -> Rows:
    rows = [
        [
            "TA vs direct",
            "teacher / student params",
            f"{c['teacher_parameters']} / {c['student_parameters']} ({c['ratio']:.0f}x)",
        ]
    ]
    for kind in ("direct", "chain"):
        for g in c[kind]["generations"]:
            rows.append(
                [
                    f"TA vs direct: {kind}",
                    f"{g['name']} {g['parameters']} params {c[kind]['split']} acc "
                    "(decay, cumulative)",
                    f"{g['accuracy']:.3f} ({g['decay']:.3f}, {g['cumulative_decay']:.3f})",
                ]
            )
    rows.append(
        ["TA vs direct", "chain - direct (points)", f"{c['chain_minus_direct_points']:+.1f}"]
    )
    return rows


def _routing_rows(o: dict[str, Any]) -> Rows:
    rows = [
        [
            f"multi-teacher {mode}",
            "student val / test acc; mixture val acc",
            f"{o[mode]['student_val']['accuracy']:.3f} / "
            f"{o[mode]['student_test']['accuracy']:.3f}; "
            f"{o[mode]['mixture_val']['accuracy']:.3f}",
        ]
        for mode in ("averaged", "routed")
    ]
    rows.append(
        [
            "multi-teacher",
            "routed - averaged (val points)",
            f"{o['routed_minus_averaged_points']:+.1f}",
        ]
    )
    return rows
