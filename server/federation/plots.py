"""Per-round plots of a federation run (matplotlib PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_agent.fl import M_EVAL_ACCURACY, M_EVAL_REFERABLE_SENSITIVITY, M_TRAIN_LOSS
from server.federation.registry import RoundRecord

__all__ = ["plot_rounds"]


def plot_rounds(rounds: Sequence[RoundRecord], path: Path) -> Path:
    """Three panels per round: training loss, federated and held-out evaluation, update counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    nums = [r.round for r in rounds]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    trained = [r for r in rounds if r.round > 0]
    ax = axes[0]
    ax.plot(
        [r.round for r in trained],
        [r.train_metrics.get(M_TRAIN_LOSS, float("nan")) for r in trained],
        marker="o",
    )
    ax.set_title("training loss (weighted by cases)")
    ax.set_xlabel("round")
    ax = axes[1]
    for key, label, scale in (
        (M_EVAL_ACCURACY, "sites: accuracy", 100.0),
        (M_EVAL_REFERABLE_SENSITIVITY, "sites: referable sensitivity", 100.0),
    ):
        ax.plot(nums, [r.eval_metrics.get(key, float("nan")) * scale for r in rounds],
                marker="o", label=label)  # fmt: skip
    for key, label in (
        ("accuracy", "held-out site: accuracy"),
        ("referable_sensitivity", "held-out site: referable sensitivity"),
    ):
        ax.plot(nums, [r.server_metrics.get(key, float("nan")) for r in rounds],
                marker="s", linestyle="--", label=label)  # fmt: skip
    ax.set_title("evaluation (points; round 0: deployed model)")
    ax.set_xlabel("round")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.bar([r.round for r in trained], [r.accepted for r in trained], label="accepted")
    ax.bar([r.round for r in trained], [r.replied - r.accepted for r in trained],
           bottom=[r.accepted for r in trained], label="replied, not counted")  # fmt: skip
    ax.plot([r.round for r in trained], [r.sampled for r in trained], "k_", markersize=20,
            label="sampled")  # fmt: skip
    ax.set_title("updates per round")
    ax.set_xlabel("round")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
