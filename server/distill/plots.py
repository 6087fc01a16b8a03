"""Plots of a run: monitor curves with alerts marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_monitors(history: list[dict[str, Any]], events: list[dict[str, Any]], path: Path) -> Path:
    """Retention, CKA, gradient consistency and validation accuracy per epoch, alerts in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    for key, label in (
        ("retention", "knowledge retention"),
        ("cka", "linear CKA"),
        ("gradient_consistency", "gradient consistency"),
    ):
        if any(key in h for h in history):
            ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=label)
    thresholds = {e["threshold"] for e in events if e["event"] == "alert"}
    for th in thresholds:
        ax.axhline(th, color="grey", linestyle=":", linewidth=1)
    for e in events:
        if e["event"] == "alert":
            ax.axvline(e["epoch"], color="red", alpha=0.4)
    ax.set_xlabel("epoch")
    if ax.lines:
        ax.set_title("distillation monitors (red: alerts)")
        ax.legend(fontsize=8)
    else:
        ax.set_title("no teacher: no distillation monitors")
    ax = axes[1]
    ax.plot(epochs, [h["val"]["accuracy"] for h in history], marker="o", label="val accuracy")
    if all("kappa" in h["val"] for h in history):
        ax.plot(epochs, [h["val"]["kappa"] for h in history], marker="o", label="val kappa")
    if any("decay" in h for h in history):
        ax.plot(
            epochs,
            [h.get("decay", {}).get("accuracy", float("nan")) for h in history],
            linestyle="--",
            label="accuracy / teacher's (decay)",
        )
    ax.set_xlabel("epoch")
    ax.set_title("validation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
