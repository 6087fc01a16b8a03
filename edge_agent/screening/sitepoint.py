"""A device's own referral threshold, from its clinician-reviewed cases.

A new camera shifts the model's scores, so the bundle's threshold (set on the server's
validation sites) can miss more referable eyes here than it should. From the reviewed cases the
device proposes the threshold that reaches the target sensitivity on its own referable eyes, but
only once the Clopper-Pearson interval of that sensitivity is narrow enough (half-width at most
``half_width``, default 5 points); until then it says how many more referable reviews it needs.
Nothing changes until a person (or a fleet policy) approves the proposal.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p) + (n - k) * math.log1p(-p)
    )  # fmt: skip


def _cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return min(1.0, sum(math.exp(_log_pmf(i, n, p)) for i in range(k + 1)))


def _solve(f: Any, target: float) -> float:
    """The p in [0, 1] where the decreasing ``f(p)`` equals ``target`` (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided ``1 - alpha`` interval of a proportion k/n."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    # P(X >= k) = alpha/2 at the lower bound, P(X <= k) = alpha/2 at the upper one
    lower = 0.0 if k == 0 else _solve(lambda p: _cdf(k - 1, n, p), 1.0 - alpha / 2)
    upper = 1.0 if k == n else _solve(lambda p: _cdf(k, n, p), alpha / 2)
    return lower, upper


@dataclass(frozen=True)
class SitePoint:
    """What the device's reviews say about its threshold: a proposal, or how many more
    referable reviews it needs first."""

    ready: bool
    referable_reviews: int
    other_reviews: int
    target_sensitivity: float
    current_threshold: float
    current_sensitivity: float | None
    threshold: float | None = None
    sensitivity: float | None = None
    interval: tuple[float, float] | None = None
    specificity: float | None = None
    needed: int = 0
    """More referable reviews needed before a proposal (0 when ready)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON form (rates rounded; thresholds exact, as applied)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and "threshold" not in key:  # thresholds exactly
                out[key] = round(value, 4)
        if self.interval is not None:
            out["interval"] = [round(v, 4) for v in self.interval]
        return out


def _half_width(k: int, n: int) -> float:
    lo, hi = clopper_pearson(k, n)
    return (hi - lo) / 2


def referable_needed(sensitivity: float, half_width: float, have: int) -> int:
    """How many more referable reviews make the interval at ``sensitivity`` narrow enough."""

    def narrow(n: int) -> bool:
        return _half_width(round(sensitivity * n), n) <= half_width

    lo = max(have, 1)
    if narrow(lo):
        return 0
    hi = lo * 2
    while not narrow(hi) and hi < 100_000:  # the half-width shrinks about as 1/sqrt(n)
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the smallest narrow enough n, by bisection
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if narrow(mid) else (mid, hi)
    return hi - have


def propose(
    scores: np.ndarray,
    referable: np.ndarray,
    current: float,
    target: float = 0.95,
    half_width: float = 0.05,
    margin: float = 0.02,
) -> SitePoint:
    """The site's point from reviewed eyes: ``scores`` (the model's P(refer) at screening) and
    ``referable`` (the clinician's verdict).

    The threshold is the highest at which the reviewed referable eyes reach ``target``
    sensitivity with the one-sided 95% Clopper-Pearson lower bound at least ``target - margin``
    (so the site's true sensitivity is very likely no more than ``margin`` below the target);
    it is proposed only once there are enough referable reviews for the two-sided 95% interval
    at the target to have a half-width of at most ``half_width`` (88 at 95% and 5 points).
    """
    scores, referable = np.asarray(scores, float), np.asarray(referable, bool)
    positive, negative = np.sort(scores[referable])[::-1], scores[~referable]
    n = len(positive)
    now = float((positive >= current).mean()) if n else None

    def point(**found: Any) -> SitePoint:
        return SitePoint(
            referable_reviews=n, other_reviews=len(negative), target_sensitivity=target,
            current_threshold=current, current_sensitivity=now, **found,
        )  # fmt: skip

    needed = referable_needed(target, half_width, n)  # the interval at the target itself
    k = next(
        (k for k in range(max(1, math.ceil(target * n)), n + 1)
         if clopper_pearson(k, n, alpha=0.1)[0] >= target - margin),
        None,
    )  # fmt: skip
    if needed or k is None:
        return point(ready=False, needed=max(needed, 1))
    threshold = float(positive[k - 1])  # the k-th highest referable score: k of n at or above
    hits = int((positive >= threshold).sum())
    lo, hi = clopper_pearson(hits, n)
    specificity = float((negative < threshold).mean()) if len(negative) else None
    return point(
        ready=True, threshold=threshold, sensitivity=hits / n, interval=(lo, hi),
        specificity=specificity,
    )  # fmt: skip


SITE_THRESHOLDS_FILE = "site_thresholds.json"
"""A bundle's per-site thresholds (written by the federation's promotion)."""


def carried_threshold(bundle_dir: Path, site: str | None) -> dict[str, Any] | None:
    """``site``'s entry in the bundle's ``site_thresholds.json`` when it holds a proposal
    (None: no site named, no such file, or no ready entry for it)."""
    if site is None:
        return None
    try:
        entry = json.loads((bundle_dir / SITE_THRESHOLDS_FILE).read_text())["sites"][site]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = (
        isinstance(entry, dict) and entry.get("ready") and isinstance(entry.get("threshold"), float)
    )
    return entry if ok else None


__all__ = [
    "SITE_THRESHOLDS_FILE",
    "SitePoint",
    "carried_threshold",
    "clopper_pearson",
    "propose",
    "referable_needed",
]
