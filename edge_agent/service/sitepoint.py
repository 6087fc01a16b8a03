"""The device's own referral threshold in the service: proposed from its reviewed cases
(``edge_agent.screening.sitepoint``), shown in ``/v1/status`` (``site_threshold`` and
``threshold_proposals``, which the fleet poll keeps), applied only when an admin approves it
(``POST /v1/threshold/approve``), audited, and kept in ``ROOT/site_threshold.json`` for this
bundle so a restart screens at it too."""

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from edge_agent.screening import SitePoint, propose
from edge_agent.service.auth import Principal
from edge_agent.service.errors import ApiError
from models import TaskSpec

STATE_FILE = "site_threshold.json"


class SitePointWatch:
    """The site's threshold for the installed bundle: the bundle's, or the one approved here."""

    def __init__(
        self,
        root: Path,
        bundle: str,
        bundle_threshold: float,
        task: TaskSpec,
        store: Any,
        carried: dict[str, Any] | None = None,
        model_version: int | None = None,
    ) -> None:
        """``carried``: this site's entry in the bundle's ``site_thresholds.json``, applied
        at once when the site had approved its own threshold under an earlier bundle;
        ``model_version``: the bundle's, whose screenings alone propose (None: all)."""
        self.path, self.bundle, self.task, self.store = root / STATE_FILE, bundle, task, store
        self.bundle_threshold, self.carried = bundle_threshold, carried
        self.model_version = model_version
        self.screener: Any = None
        """The screening whose settings an approval changes (set by ``create_app``)."""
        self._cache: tuple[tuple[int, int], SitePoint] | None = None
        self._lock = threading.Lock()
        state = self._read()
        ours = state is not None and state.get("bundle") == bundle
        self.applied: dict[str, Any] | None = state if ours else None
        if state is not None and not ours and carried is not None:
            reason = (
                "carried into this bundle: the site approved its own threshold under an "
                f"earlier one ({state.get('reason', 'approved')}); the federation recomputed "
                "it for these weights on the site's reviewed cases"
            )
            self._apply(float(carried["threshold"]), "fovea-agent", reason, carried)

    def _read(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # none yet, or unreadable: the bundle's threshold
        ok = isinstance(state, dict) and isinstance(state.get("threshold"), float)
        return state if ok else None

    @property
    def threshold(self) -> float:
        """The threshold screening uses now."""
        return float(self.applied["threshold"]) if self.applied else self.bundle_threshold

    def point(self) -> SitePoint:
        """What the reviewed cases that verify say now (recomputed when reviews change)."""
        counts = self.store.counts()
        key = (counts["reviews"], counts["audit"])
        with self._lock:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
            outcomes = self.store.reviewed_outcomes(self.model_version)
            scores = np.array([p for p, _ in outcomes], float)
            labels = np.array([c for _, c in outcomes], int)
            referable = self.task.is_referable(labels) if len(labels) else np.zeros(0, bool)
            target = self.task.referral.target_sensitivity
            found = propose(scores, referable, self.threshold, target=target)
            self._cache = (key, found)
        return found

    def status(self) -> dict[str, Any]:
        """``/v1/status``'s ``site_threshold`` and ``threshold_proposals``."""
        point = self.point()
        pending = point.ready and point.threshold is not None and point.threshold != self.threshold
        proposal = {"status": "pending", **point.as_dict()} if pending else None
        section = {
            "bundle_threshold": self.bundle_threshold,
            "threshold": self.threshold,
            "applied": self.applied,
            "carried": self.carried,
            "point": point.as_dict(),
        }
        return {"site_threshold": section, "threshold_proposals": [proposal] if proposal else []}

    def approve(self, user: str, reason: str = "approved by an admin") -> dict[str, Any]:
        """Apply the pending proposal (audited with ``reason``: an admin's, or the fleet
        policy's); ApiError(409) when there is none."""
        point = self.point()
        if not point.ready or point.threshold is None:
            raise ApiError(
                409,
                f"no threshold to approve: {point.needed} more referable reviewed cases are "
                f"needed (have {point.referable_reviews})",
            )
        if point.threshold == self.threshold:
            raise ApiError(
                409, "no threshold to approve: the site already screens at the proposed one"
            )
        self._apply(point.threshold, user, reason, point.as_dict())
        return self.status()

    def _apply(self, threshold: float, user: str, reason: str, point: dict[str, Any]) -> None:
        state = {
            "bundle": self.bundle, "threshold": threshold, "from": self.threshold,
            "approved_by": user, "reason": reason[:300], "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "point": point,
        }  # fmt: skip
        self.store.audit(user, "threshold.applied", state)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.path)
        self.applied = state
        if self.screener is not None:  # screenings from now on use it
            settings = self.screener.settings
            self.screener.settings = dataclasses.replace(settings, referral_threshold=threshold)


def site_point_router(
    watch: SitePointWatch,
    can_read: Callable[[Request], Principal],
    can_manage: Callable[[Request], Principal],
) -> APIRouter:
    """``GET /v1/threshold`` and ``POST /v1/threshold/approve`` (admins)."""
    router = APIRouter()
    CanRead = Annotated[Principal, Depends(can_read)]
    CanManage = Annotated[Principal, Depends(can_manage)]

    @router.get("/v1/threshold")
    async def show(_: CanRead) -> dict[str, Any]:
        """The site's threshold, and what its reviewed cases propose."""
        return watch.status()

    @router.post("/v1/threshold/approve")
    async def approve(user: CanManage, reason: str = "approved by an admin") -> dict[str, Any]:
        """Apply the proposed threshold (audited with ``reason``; 409 when none is ready)."""
        return watch.approve(user.name, reason)

    return router


__all__ = ["STATE_FILE", "SitePointWatch", "site_point_router"]
