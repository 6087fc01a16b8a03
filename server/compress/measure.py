"""Size and speed of a model, for the compression curve."""

from __future__ import annotations

import statistics
import time

import torch

from models.nets import FundusNet, count_parameters


@torch.no_grad()
def latency_ms(model: FundusNet, size: int, *, batch: int = 1, runs: int = 20) -> float:
    """Median PyTorch CPU latency of one batch, in milliseconds (after two warm-up passes)."""
    was = model.training
    device = next(model.parameters()).device
    model.eval().cpu()
    x = torch.randn(batch, model.task.input.channels, size, size)
    try:
        for _ in range(2):
            model(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        model.train(was).to(device)
    return statistics.median(times)


def curve_point(
    label: str, model: FundusNet, metrics: dict[str, float], size: int, runs: int
) -> dict[str, float | str | int]:
    """One point of the compression curve: parameters, latency and validation metrics."""
    point: dict[str, float | str | int] = {"label": label, "parameters": count_parameters(model)}
    if runs > 0:
        point["latency_ms"] = latency_ms(model, size, runs=runs)
    for key in ("accuracy", "kappa", "referable_sensitivity", "referable_auc"):
        if key in metrics:
            point[key] = metrics[key]
    return point
