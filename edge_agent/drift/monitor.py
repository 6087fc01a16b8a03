"""A device's drift monitor: every screened image updates its statistic families' CUSUMs
against the bundle's reference; alarms become alerts that last until an admin resets them.
State is kept in the device root, written atomically every so many images or seconds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.drift.cusum import Family, FamilyState, calibrate
from edge_agent.drift.features import Observation
from edge_agent.drift.reference import DriftReference

STATE_FILE = "drift.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class DriftSettings:
    """The false-alarm budget and how statistics are batched.

    The device as a whole may raise ``false_alarms`` alarms (expected) in ``horizon_images``
    screenings of an unchanged camera and population; the budget is split evenly over every
    one-sided CUSUM (Bonferroni), each calibrated by simulation from the reference.
    """

    horizon_images: int = 20_000
    false_alarms: float = 0.25
    k: float = 0.5
    """CUSUM reference value, in standardised batch-score units."""
    mean_batch: int = 10
    rate_batch: int = 25
    grade_batch: int = 50
    streams: int = 2000
    """Simulated devices per calibration."""
    save_every_images: int = 50
    save_every_s: float = 30.0

    def __post_init__(self) -> None:
        if self.horizon_images < 100:
            raise ValueError(f"horizon_images must be >= 100, got {self.horizon_images}")
        if not 0 < self.false_alarms < 1:
            raise ValueError(f"false_alarms must be in (0, 1), got {self.false_alarms}")


def families(reference: DriftReference, settings: DriftSettings) -> list[Family]:
    """The statistic families the reference allows watching."""
    ref, s = reference, settings
    out = [
        Family("brightness", "mean", s.mean_batch, ref.brightness.mean, ref.brightness.std),
        Family("sharpness", "mean", s.mean_batch, ref.sharpness.mean, ref.sharpness.std),
        Family("retake_rate", "rate", s.rate_batch, ref.retake_rate),
    ]
    if ref.referral_rate is not None:
        out.append(Family("referral_rate", "rate", s.rate_batch, ref.referral_rate))
    if ref.confidence is not None:
        conf = ref.confidence
        out.append(Family("confidence", "mean", s.mean_batch, conf.mean, conf.std))
    if ref.grade_distribution is not None and len(ref.grade_distribution) >= 2:
        probs = tuple(ref.grade_distribution)
        out.append(Family("grade_distribution", "categories", s.grade_batch, probs=probs))
    return out


def _value(family: str, o: Observation) -> float | None:
    if family == "brightness":
        return o.brightness
    if family == "sharpness":
        return o.sharpness
    if family == "retake_rate":
        return float(o.retake)
    if family == "referral_rate":
        return None if o.referable is None else float(o.referable)
    if family == "confidence":
        return o.confidence
    return None if o.grade is None else float(o.grade)


def _reference_value(family: Family) -> float | list[float]:
    return list(family.probs) if family.kind == "categories" else family.mean


class DriftMonitor:
    """Running drift statistics of one installed bundle against its reference.

    ``observe`` is called once per screened image; ``status`` is what ``/v1/status`` shows
    under ``drift``; ``reset`` clears alerts and statistics (an admin's acknowledgement).
    """

    def __init__(
        self,
        reference: DriftReference,
        state_path: Path | None,
        bundle: str,
        settings: DriftSettings | None = None,
    ) -> None:
        self.reference, self.state_path, self.bundle = reference, state_path, bundle
        self.settings = s = settings or DriftSettings()
        self.families = families(reference, s)
        self.calibration = calibration_key(reference, s)
        saved = self._read()
        self.thresholds: dict[str, dict[str, float]] = (
            self._calibrated(reference.thresholds, reference.calibration)
            or self._calibrated(saved.get("thresholds"), saved.get("calibration"))
            or self._calibrate()
        )
        self._lock = threading.Lock()
        self._fresh()
        self._load(saved)

    def _calibrated(self, thresholds: object, key: object) -> dict[str, dict[str, float]] | None:
        """``thresholds`` when they were calibrated for this reference and these settings (the
        bundle's, or those saved on the device), else None."""
        names = {f.name: set(f.sides) for f in self.families}
        if key != self.calibration or not isinstance(thresholds, dict):
            return None
        if {k: set(v) for k, v in thresholds.items() if isinstance(v, dict)} != names:
            return None
        return thresholds

    def _calibrate(self) -> dict[str, dict[str, float]]:
        """Thresholds per family and direction for the false-alarm budget (Bonferroni split)."""
        s = self.settings
        alpha = s.false_alarms / sum(len(f.sides) for f in self.families)
        return {
            f.name: calibrate(f, s.horizon_images // f.batch, alpha, s.k, s.streams, seed=i)
            for i, f in enumerate(self.families)
        }

    def _fresh(self) -> None:
        self.images = 0
        self.states = {f.name: FamilyState.empty() for f in self.families}
        self.alerts: list[dict[str, Any]] = []
        self.raised = 0
        self.reset_info: dict[str, Any] | None = None
        self._unsaved, self._saved_at = 0, time.monotonic()

    def observe(self, observation: Observation) -> list[dict[str, Any]]:
        """Count one screened image; the alerts it raised (usually none)."""
        raised = []
        with self._lock:
            self.images += 1
            for family in self.families:
                value = _value(family.name, observation)
                if value is None:
                    continue
                state = self.states[family.name]
                if state.add(family, value, self.settings.k) is None:
                    continue
                raised += self._check(family, state)
            self._unsaved += 1
            due = self._unsaved >= self.settings.save_every_images or (
                time.monotonic() - self._saved_at >= self.settings.save_every_s
            )
        if raised or due:
            self.save()
        return raised

    def _check(self, family: Family, state: FamilyState) -> list[dict[str, Any]]:
        raised = []
        for direction in family.sides:
            h = self.thresholds[family.name][direction]
            cusum = state.up if direction == "up" else state.down
            if cusum < h:
                continue
            alert = {
                "name": f"{family.name}_{direction}",
                "statistic": family.name,
                "direction": direction,
                "raised_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "images": self.images,
                "value": state.recent_value(),
                "reference": _reference_value(family),
                "cusum": round(cusum, 3),
                "threshold": round(h, 3),
            }
            if direction == "up":
                state.up = 0.0
            else:
                state.down = 0.0
            self.raised += 1
            # one alert per statistic and direction: a repeat updates it
            self.alerts = [a for a in self.alerts if a["name"] != alert["name"]] + [alert]
            raised.append(alert)
        return raised

    def status(self) -> dict[str, Any]:
        """The ``drift`` section of ``/v1/status``."""
        with self._lock:
            stats = {}
            for f in self.families:
                st = self.states[f.name]
                stats[f.name] = {
                    "reference": _reference_value(f),
                    "recent": st.recent_value(),
                    "mean": st.total / st.values if st.values and f.kind != "categories" else None,
                    "values": st.values,
                    "cusum_up": round(st.up, 3),
                    "cusum_down": round(st.down, 3) if len(f.sides) == 2 else None,
                    "threshold": {d: round(h, 3) for d, h in self.thresholds[f.name].items()},
                }
            return {
                "reference": self.reference.summary(),
                "images": self.images,
                "alerts": [dict(a) for a in self.alerts],
                "alerts_raised": self.raised,
                "statistics": stats,
                "last_reset": self.reset_info,
            }

    def reset(self, by: str) -> dict[str, Any]:
        """Clear the alerts and start the statistics again (an admin has looked); the status."""
        with self._lock:
            self._fresh()
            self.reset_info = {"by": by, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.save()
        return self.status()

    def save(self) -> None:
        """Write the state to ``state_path`` atomically (nothing without a path; an OSError is
        not raised: drift monitoring must not fail a screening)."""
        if self.state_path is None:
            return
        with self._lock:
            body = {
                "schema_version": STATE_VERSION,
                "bundle": self.bundle,
                "images": self.images,
                "raised": self.raised,
                "alerts": self.alerts,
                "last_reset": self.reset_info,
                "families": {k: dataclasses.asdict(v) for k, v in self.states.items()},
                "calibration": self.calibration,
                "thresholds": self.thresholds,
            }
            self._unsaved, self._saved_at = 0, time.monotonic()
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self.state_path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any]:
        """The saved state when it is this bundle's, else {} (a new bundle starts afresh; an
        unreadable state too, rather than stop the agent)."""
        if self.state_path is None or not self.state_path.is_file():
            return {}
        try:
            body = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        ours = isinstance(body, dict) and body.get("schema_version") == STATE_VERSION
        return body if ours and body.get("bundle") == self.bundle else {}

    def _load(self, body: dict[str, Any]) -> None:
        """Continue from a saved state (``_read``'s)."""
        if not body:
            return
        try:
            states = {k: FamilyState(**v) for k, v in body["families"].items()}
            images, raised = int(body["images"]), int(body["raised"])
            alerts = list(body["alerts"])
        except (ValueError, TypeError, KeyError, AttributeError):
            return
        if set(states) != set(self.states):
            return
        self.states, self.images, self.alerts, self.raised = states, images, alerts, raised
        self.reset_info = body.get("last_reset")


def calibration_key(reference: DriftReference, settings: DriftSettings) -> str:
    """What the thresholds depend on: the reference and the settings, hashed."""
    text = reference.statistics_json() + repr(dataclasses.astuple(settings))
    return hashlib.sha256(text.encode()).hexdigest()


def calibrated_reference(
    reference: DriftReference, settings: DriftSettings | None = None
) -> DriftReference:
    """``reference`` carrying its thresholds for ``settings`` (default: the agent's), so that
    devices with those settings use them instead of simulating at start."""
    settings = settings or DriftSettings()
    thresholds = DriftMonitor(reference, None, "", settings).thresholds
    key = calibration_key(reference, settings)
    return reference.model_copy(update={"thresholds": thresholds, "calibration": key})
