"""The report's plots: matplotlib figures rendered to base64 PNG data URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from server.report.evaluation import SiteResult

__all__ = ["confusion_png", "federation_png", "models_png", "monitor_png", "reliability_png"]


def _figure(width: float, height: float, cols: int = 1) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, cols, figsize=(width, height), squeeze=False)


def _png(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=96)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def models_png(rows: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy, file size and batch-1 latency per model, side by side."""
    fig, axes = _figure(12, 3.2, 3)
    names = [str(r["name"]) for r in rows]
    panels = (
        ("accuracy", "accuracy on the held-out split (%)"),
        ("size_kb", "file size (kB)"),
        ("latency_ms", "batch-1 latency (ms)"),
    )
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        values = [r.get(key) for r in rows]
        shown = [float(v) if v is not None else 0.0 for v in values]
        bars = ax.bar(range(len(names)), shown, color="#4c78a8")
        for bar, v in zip(bars, values, strict=True):
            label = "n/a" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    return _png(fig)


def monitor_png(evals: Sequence[Mapping[str, Any]], alerts: Sequence[Mapping[str, Any]]) -> str:
    """Validation metrics and the monitors per epoch; each alert a red line with its action."""
    fig, axes = _figure(12, 3.4, 2)
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(evals)]
    left, right = axes[0]
    for key, label in (
        ("accuracy", "val accuracy"),
        ("kappa", "val kappa"),
        ("referable_sensitivity", "val referable sensitivity"),
    ):
        left.plot(
            epochs, [r.get("val", {}).get(key, np.nan) for r in evals], marker="o", label=label
        )
    for key, label in (
        ("retention", "knowledge retention"),
        ("cka", "CKA"),
        ("gradient_consistency", "gradient consistency"),
    ):
        right.plot(epochs, [r.get(key, np.nan) for r in evals], marker="o", label=label)
    for alert in alerts:
        threshold = alert.get("threshold")
        if threshold is not None:
            right.axhline(float(threshold), color="grey", linestyle=":", linewidth=1)
        for ax in (left, right):
            ax.axvline(float(alert.get("epoch", 0)), color="#d62728", linestyle="--", linewidth=1.2)
        right.annotate(
            f"alert: {alert.get('action', 'alert')}",
            (float(alert.get("epoch", 0)), 0.02),
            xycoords=("data", "axes fraction"),
            color="#d62728",
            fontsize=8,
            rotation=90,
            ha="right",
            va="bottom",
        )
    left.set_title("validation (per epoch)", fontsize=10)
    right.set_title("distillation monitors (red: alerts)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    return _png(fig)


def confusion_png(results: Mapping[str, SiteResult], held_out: str | None) -> str:
    """One confusion matrix per site in the results' task's classes (rows: true class,
    columns: predicted; for ``grading`` tasks, grades)."""
    sites = list(results)
    cols = min(len(sites), 3)
    rows = -(-len(sites) // cols)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows), squeeze=False)
    task = results[sites[0]].task
    short = [name.split()[0] for name in task.classes]
    what = "grade" if task.kind == "grading" else "class"
    for ax, site in zip(axes.flat, sites, strict=False):
        r = results[site]
        share = r.matrix / np.maximum(r.matrix.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(r.matrix):
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )
        ticks = range(len(short))
        ax.set_xticks(ticks, short, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(ticks, short, fontsize=7)
        ax.set_xlabel(f"predicted {what}", fontsize=8)
        ax.set_ylabel(f"true {what}", fontsize=8)
        tag = " (unseen in training)" if site == held_out else ""
        ax.set_title(f"{site}{tag}\nn={r.n}, accuracy {100 * r.accuracy:.1f}%", fontsize=9)
    for ax in list(axes.flat)[len(sites) :]:
        ax.axis("off")
    return _png(fig)


def federation_png(
    per_node: Mapping[str, Mapping[int, float]], held_out: Mapping[int, float]
) -> str:
    """Federated evaluation accuracy per round: one line per site, the held-out site dashed."""
    fig, axes = _figure(8, 3.4)
    ax = axes[0][0]
    for label, series in per_node.items():
        rounds = sorted(series)
        ax.plot(rounds, [100 * series[r] for r in rounds], marker="o", label=label)
    if held_out:
        rounds = sorted(held_out)
        ax.plot(
            rounds, [held_out[r] for r in rounds], "k--", marker="s", label="held-out site (server)"
        )
    ax.set_xlabel("round (0: deployed model)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("evaluation accuracy per site and round", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def _reliability_points(bins: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    pairs = [
        (float(c), float(o))
        for c, o, n in zip(bins["confidence"], bins["observed"], bins["counts"], strict=True)
        if n and c is not None and o is not None
    ]
    return [c for c, _ in pairs], [o for _, o in pairs]


def reliability_png(curves: Mapping[str, Mapping[str, Any]]) -> str:
    """One reliability diagram per entry (a model on a split): observed referable share against
    mean P(refer) per bin, raw and after temperature scaling, with each ECE."""
    names = list(curves)
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        cal = curves[name]
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for key, style, label in (
            ("before", "s--", "raw"),
            ("after", "o-", f"T = {float(cal.get('temperature', 1.0)):.2f}"),
        ):
            bins = cal.get(key)
            if not bins:
                continue
            x, y = _reliability_points(bins)
            ax.plot(x, y, style, markersize=4, label=f"{label}, ECE {float(bins['ece']):.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean P(refer) in bin", fontsize=8)
        ax.set_ylabel("referable share", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    return _png(fig)
