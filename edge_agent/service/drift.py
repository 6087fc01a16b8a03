"""Drift monitoring in the service: the monitor fed after each screening, its ``drift`` section
of ``/v1/status``, its Prometheus families and ``POST /v1/drift/reset`` (admins)."""

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Self

import numpy as np
from fastapi import APIRouter, Depends, Request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge_agent.drift import (
    STATE_FILE,
    DriftMonitor,
    DriftSettings,
    observe_eye,
    read_reference,
)
from edge_agent.screening import EyeResult
from edge_agent.service.auth import Principal
from edge_agent.service.errors import ApiError


class DriftWatch:
    """The agent's drift monitor, or why there is none (a bundle without a reference)."""

    def __init__(self, monitor: DriftMonitor | None, note: str) -> None:
        self.monitor, self.note = monitor, note

    @classmethod
    def for_slot(
        cls, slot_dir: Path, root: Path, bundle: str, settings: DriftSettings | None = None
    ) -> Self:
        """The monitor of the bundle installed in ``slot_dir``, its state kept in ``root``
        (a state saved for another bundle is not carried over)."""
        reference, note = read_reference(slot_dir)
        if reference is None:
            return cls(None, note)
        return cls(DriftMonitor(reference, root / STATE_FILE, bundle, settings), note)

    def observe(self, squares: Sequence[np.ndarray], results: Sequence[EyeResult]) -> None:
        """Count the screened eyes (their preprocessed images and results)."""
        if self.monitor is None:
            return
        for square, result in zip(squares, results, strict=True):
            self.monitor.observe(observe_eye(square, result))

    def status(self) -> dict[str, Any]:
        """The ``drift`` section of ``/v1/status``."""
        if self.monitor is None:
            return {"reference": None, "note": self.note, "images": 0, "alerts": []}
        return {**self.monitor.status(), "note": self.note}

    def save(self) -> None:
        """Write the monitor's state now (at shutdown)."""
        if self.monitor is not None:
            self.monitor.save()


class DriftCollector(Collector):
    """Drift alerts and statistics as Prometheus families, read at scrape time."""

    def __init__(self, watch: DriftWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        status = self.watch.status()
        available = GaugeMetricFamily(
            "fovea_drift_reference", "1 when the bundle carries a drift reference"
        )
        available.add_metric([], float(status["reference"] is not None))
        images = GaugeMetricFamily("fovea_drift_images", "images counted since the last reset")
        images.add_metric([], float(status["images"]))
        alerts = GaugeMetricFamily(
            "fovea_drift_alert",
            "1 for each drift alert standing (until an admin resets it)",
            labels=["statistic", "direction"],
        )
        for alert in status["alerts"]:
            alerts.add_metric([alert["statistic"], alert["direction"]], 1.0)
        raised = CounterMetricFamily(
            "fovea_drift_alerts", "drift alerts raised since the last reset"
        )
        raised.add_metric([], float(status.get("alerts_raised", 0)))
        cusum = GaugeMetricFamily(
            "fovea_drift_cusum",
            "CUSUM statistic over its alarm threshold (alarm at 1)",
            labels=["statistic", "direction"],
        )
        for name, stat in status.get("statistics", {}).items():
            for direction, h in stat["threshold"].items():
                cusum.add_metric([name, direction], stat[f"cusum_{direction}"] / h)
        return [available, images, alerts, raised, cusum]


def drift_router(watch: DriftWatch, can_manage: Callable[[Request], Principal]) -> APIRouter:
    """``POST /v1/drift/reset``: an admin acknowledges the alerts and restarts the statistics."""
    router = APIRouter()
    CanManage = Annotated[Principal, Depends(can_manage)]

    @router.post("/v1/drift/reset")
    async def reset(user: CanManage) -> dict[str, Any]:
        """Clear drift alerts and statistics; the new drift status."""
        if watch.monitor is None:
            raise ApiError(409, f"drift is not monitored on this device: {watch.note}")
        return {**watch.monitor.reset(user.name), "note": watch.note}

    return router


__all__ = ["DriftCollector", "DriftWatch", "drift_router"]
