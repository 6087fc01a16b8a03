"""The promotion gate: non-inferiority on paired predictions, against every reference model.

A candidate passes when, for each gate metric and each reference model (the deployed one and
the last one a person validated), the one-sided 95% lower bound of candidate − reference is
above −margin. The bound is the 5th percentile of a paired bootstrap: the held-out images are
resampled and the *same* resample scores both models, so what they agree on cancels. Because
every promoted model is bounded against the last validated one, a run of small losses cannot
add up past the margin.

How many images a margin needs (the power of the gate for an equally good candidate): with
``n`` paired images of which a fraction ``d`` is right for one model and wrong for the other,
the standard error of the difference is about ``sqrt(d / n)``. An equal candidate passes with
probability ``Φ(m / sqrt(d / n) − 1.645)``, so an 80% chance needs
``n >= d · ((1.645 + 0.842) / m)²`` (``m`` a fraction, not points): :func:`images_needed`.

Per-site results come from each device's own held-out share, where the device scores both the
deployed and the candidate weights on the same cases; a site blocks promotion when its loss is
beyond the margin with 95% confidence (few cases per site: a noisy dip does not block).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from models import Predictions, metric_table

__all__ = [
    "Comparison",
    "GateResult",
    "SiteResult",
    "gate",
    "images_needed",
    "paired_comparisons",
    "pass_probability",
    "site_results",
]

CONFIDENCE = 0.95
"""One-sided: the lower bound is the 5th percentile of the paired bootstrap."""
RESAMPLES = 2000
_Z = NormalDist().inv_cdf(CONFIDENCE)


@dataclass(frozen=True)
class Comparison:
    """Candidate − one reference on one metric (points), with the paired interval."""

    reference: str
    metric: str
    candidate: float
    reference_value: float
    difference: float
    lower: float
    """The one-sided 95% lower bound (5th percentile of the paired bootstrap)."""
    upper: float
    """The 95th percentile (with ``lower``, a two-sided 90% interval)."""
    margin: float
    images: int

    @property
    def passed(self) -> bool:
        """Non-inferior: the lower bound is above −margin."""
        return math.isfinite(self.lower) and self.lower > -self.margin

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready row of the decision record."""
        return asdict(self) | {"passed": self.passed}


@dataclass(frozen=True)
class SiteResult:
    """One site's own held-out result: deployed and candidate on the same cases (points)."""

    site: str
    cases: int
    deployed: float | None
    candidate: float | None
    difference: float | None
    upper: float | None
    """One-sided 95% upper bound of candidate − deployed (worst-case paired standard error)."""
    verdict: str
    """``ok``, ``loss`` (beyond the margin with 95% confidence: blocks) or ``not measured``."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready row of the decision record."""
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict, why, and every number behind it."""

    passed: bool
    reason: str
    margin: float
    comparisons: list[Comparison]
    sites: list[SiteResult] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)
    """Reference name (``deployed``, ``validated``) -> what it is (path, version, who)."""

    def to_json(self) -> dict[str, Any]:
        """The decision record's ``gate`` object (what the report and the fleet page read)."""
        return {
            "schema_version": 1,
            "rule": "paired bootstrap non-inferiority: 5th percentile of candidate - reference "
            "> -margin, for every metric and reference; no site with a loss beyond the margin",
            "confidence": CONFIDENCE,
            "margin": self.margin,
            "references": self.references,
            "comparisons": [c.to_json() for c in self.comparisons],
            "sites": [s.to_json() for s in self.sites],
            "verdict": "promote" if self.passed else "keep",
            "reason": self.reason,
        }


def paired_comparisons(
    candidate: Predictions,
    reference: Predictions,
    name: str,
    metrics: Sequence[str],
    margin: float,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[Comparison]:
    """Candidate − ``reference`` per metric (points) with the paired bootstrap bounds; both
    must be predictions on the same labelled images (``ValueError`` otherwise)."""
    if not (
        np.array_equal(candidate.grade, reference.grade)
        and np.array_equal(candidate.gradable, reference.gradable)
    ):
        raise ValueError(f"the gate pairs predictions on the same images; {name} has others")
    n = len(candidate.grade)
    ones = np.ones((1, n), dtype=np.float32)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)
    pc, pr = metric_table(candidate, ones), metric_table(reference, ones)
    bc, br = metric_table(candidate, w), metric_table(reference, w)
    out = []
    for k in metrics:
        diff = 100.0 * (bc[k] - br[k])
        diff = diff[np.isfinite(diff)]
        lo, hi = float("nan"), float("nan")
        if len(diff):  # a metric undefined on the set (no referable case) never passes
            lo, hi = (float(v) for v in np.percentile(diff, [5.0, 95.0]))
        c, r = 100.0 * float(pc[k][0]), 100.0 * float(pr[k][0])
        out.append(Comparison(name, k, c, r, c - r, lo, hi, margin, n))
    return out


def site_results(per_site: Mapping[str, Any], margin: float) -> list[SiteResult]:
    """Each site's accuracy, deployed vs candidate on its own held-out cases.

    ``per_site`` maps a site to ``{"candidate": metrics}`` of the last round's evaluation
    (a device reports ``eval-accuracy`` and ``deployed-eval-accuracy`` on the same cases, as
    fractions) and optionally ``{"deployed": metrics}`` of the baseline round.
    """
    out = []
    for site, m in sorted(per_site.items()):
        after = dict(m.get("candidate") or {})
        before = dict(m.get("deployed") or {})
        cand = after.get("eval-accuracy")
        dep = after.get("deployed-eval-accuracy", before.get("eval-accuracy"))
        cases = int(after.get("eval-num-examples", after.get("num-examples", 0)) or 0)
        if cand is None or dep is None or cases <= 0:
            out.append(SiteResult(site, cases, None, None, None, None, "not measured"))
            continue
        # paired, discordance unknown: at most the two error rates together (worst case)
        se = math.sqrt(max((1 - cand) + (1 - dep), 1.0 / cases) / cases)
        diff = 100.0 * (cand - dep)
        upper = diff + 100.0 * _Z * se
        verdict = "loss" if upper < -margin else "ok"
        out.append(SiteResult(site, cases, 100.0 * dep, 100.0 * cand, diff, upper, verdict))
    return out


def gate(
    candidate: Predictions,
    references: Mapping[str, Predictions],
    metrics: Sequence[str],
    margin: float,
    per_site: Mapping[str, Any] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> GateResult:
    """Non-inferiority of ``candidate`` against every reference on every metric, and no site
    with a loss beyond ``margin``; the reason names each failure with its numbers."""
    if not references:
        raise ValueError("the gate needs at least one reference model")
    comparisons = [
        c
        for name, ref in references.items()
        for c in paired_comparisons(
            candidate, ref, name, metrics, margin, resamples=resamples, seed=seed
        )
    ]
    sites = site_results(per_site or {}, margin)
    failed = [
        f"{c.metric} vs {c.reference}: {c.difference:+.2f} (lower bound {c.lower:+.2f} <= "
        f"-{margin:g})"
        for c in comparisons
        if not c.passed
    ]
    failed += [
        f"site {s.site}: accuracy {s.difference:+.2f} on {s.cases} cases (upper bound "
        f"{s.upper:+.2f} < -{margin:g})"
        for s in sites
        if s.verdict == "loss"
    ]
    n = comparisons[0].images
    where = f"paired bootstrap on {n} held-out images, margin {margin:g} points"
    if failed:
        return GateResult(False, f"kept: not non-inferior ({where}): " + "; ".join(failed),
                          margin, comparisons, sites)  # fmt: skip
    worst = min(comparisons, key=lambda c: c.lower + c.margin)
    reason = (
        f"non-inferior to {' and '.join(references)} on {', '.join(metrics)} ({where}; "
        f"closest: {worst.metric} vs {worst.reference} {worst.difference:+.2f}, lower bound "
        f"{worst.lower:+.2f})"
    )
    return GateResult(True, reason, margin, comparisons, sites)


def pass_probability(images: int, discordance: float, margin: float) -> float:
    """The chance that an equally good candidate passes one comparison: ``images`` paired
    images, a fraction ``discordance`` right for one model only, ``margin`` in points."""
    se = math.sqrt(discordance / images)
    return NormalDist().cdf(margin / 100.0 / se - _Z)


def images_needed(discordance: float, margin: float, power: float = 0.8) -> int:
    """The paired images one comparison needs for an equal candidate to pass with ``power``."""
    z = _Z + NormalDist().inv_cdf(power)
    return math.ceil(discordance * (z / (margin / 100.0)) ** 2)
