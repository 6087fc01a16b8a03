"""Energy per inference: Intel RAPL counters, or INA3221 rail power integrated over time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edge_agent.telemetry.host import rapl_domains
from edge_agent.telemetry.jetson import power_rails


class EnergyMeter:
    """Cumulative joules on this device since creation, where the hardware says.

    RAPL counters are read exactly (with wrap-around); Jetson rails give power only, so each
    :meth:`total_joules` call integrates it (trapezoid) since the previous call: call it
    regularly (e.g. from the metrics scrape) for a useful figure.
    """

    def __init__(self, root: Path = Path("/")) -> None:
        """Look for RAPL first, then the Jetson power rails, under ``root``."""
        self.root = Path(root)
        self._lock = threading.Lock()
        status, self._rapl = rapl_domains(self.root)
        self.source = status
        self._last_uj: dict[str, float] = {}
        self._joules = 0.0
        self._last_power: tuple[float, float] | None = None
        if self._rapl:
            self._last_uj = {d: self._uj(d) for d in self._rapl}
        else:
            rails_source, rails = power_rails(self.root)
            if rails:
                self.source = rails_source
                self._last_power = (time.monotonic(), self._power_w())
        self._counted = 0
        self._window_joules = 0.0

    @property
    def available(self) -> bool:
        """Whether energy can be measured here."""
        return not self.source.startswith("unavailable")

    def _uj(self, domain: str) -> float:
        return float(self._rapl[domain][0].read_text())

    def _power_w(self) -> float:
        _, rails = power_rails(self.root)
        return sum(r["power_mw"] for r in rails.values()) / 1000.0

    def total_joules(self) -> float | None:
        """Joules used since creation (None where unavailable)."""
        if not self.available:
            return None
        with self._lock:
            if self._rapl:
                for domain, (_, span) in self._rapl.items():
                    now = self._uj(domain)
                    delta = now - self._last_uj[domain]
                    self._joules += (delta if delta >= 0 else delta + span) / 1e6
                    self._last_uj[domain] = now
            elif self._last_power is not None:
                t0, p0 = self._last_power
                t1, p1 = time.monotonic(), self._power_w()
                self._joules += (p0 + p1) / 2.0 * (t1 - t0)
                self._last_power = (t1, p1)
            return self._joules

    def joules_per_inference(self, inferences: int) -> float | None:
        """Joules per inference since the previous call, given the inferences run meanwhile."""
        total = self.total_joules()
        if total is None or inferences <= 0:
            return None
        used = total - self._window_joules
        self._window_joules = total
        return used / inferences
