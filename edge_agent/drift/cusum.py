"""One-sided CUSUMs on standardised batch scores, one statistic family at a time, with
thresholds set by simulating the family's in-control behaviour from the reference.

Each family turns a batch of per-image values into a score that is about N(0, 1) while the
device sees what the reference saw: a batch mean standardised by the reference's spread, a rate
through the arcsine square root (variance-stabilised), a class count vector through the
chi-square statistic and the Wilson-Hilferty transform. A CUSUM per direction accumulates
``score - k``; crossing the threshold ``h`` is an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["mean", "rate", "categories"]


@dataclass(frozen=True)
class Family:
    """A monitored statistic: how its batches are scored against the reference."""

    name: str
    kind: Kind
    batch: int
    """Values per scored batch."""
    mean: float = 0.0
    """Reference mean (``mean``) or rate (``rate``)."""
    std: float = 1.0
    """Reference standard deviation per image (``mean`` only)."""
    probs: tuple[float, ...] = ()
    """Reference share per class (``categories`` only)."""

    def __post_init__(self) -> None:
        if self.batch < 2:
            raise ValueError(f"{self.name}: batch must be >= 2 values, got {self.batch}")

    @property
    def sides(self) -> tuple[str, ...]:
        """The directions watched: a class distribution can only move away ("up")."""
        return ("up",) if self.kind == "categories" else ("up", "down")

    def score(self, values: np.ndarray) -> np.ndarray:
        """Scores of batches: ``values`` is (..., batch) values, or (..., classes) counts."""
        m = self.batch
        if self.kind == "mean":
            spread = max(self.std, 1e-6) / np.sqrt(m)
            return (values.mean(axis=-1) - self.mean) / spread
        if self.kind == "rate":
            p = min(max(self.mean, 0.005), 0.995)
            rate = values.mean(axis=-1)
            return 2 * np.sqrt(m) * (np.arcsin(np.sqrt(rate)) - np.arcsin(np.sqrt(p)))
        expected = m * self.expected_shares()
        chi2 = ((values - expected) ** 2 / expected).sum(axis=-1)
        df = len(expected) - 1
        c = 2 / (9 * df)
        return ((chi2 / df) ** (1 / 3) - (1 - c)) / np.sqrt(c)

    def expected_shares(self) -> np.ndarray:
        """The reference's class shares, none below 0.5% (a class never seen may still be)."""
        shares = np.maximum(np.asarray(self.probs, dtype=np.float64), 0.005)
        return shares / shares.sum()

    def simulate(self, rng: np.random.Generator, streams: int) -> np.ndarray:
        """One in-control batch score for each of ``streams`` simulated devices."""
        m = self.batch
        if self.kind == "mean":
            return rng.standard_normal(streams)
        if self.kind == "rate":
            p = min(max(self.mean, 0.0), 1.0)
            return self.score(rng.binomial(1, p, size=(streams, m)).astype(np.float64))
        return self.score(rng.multinomial(m, self.expected_shares(), size=streams))


def calibrate(
    family: Family, batches: int, alpha: float, k: float, streams: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Per direction, the threshold at which ``family``'s one-sided CUSUM alarms within
    ``batches`` in-control batches with probability at most ``alpha`` (estimated on
    ``streams`` simulated devices)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    paths = {side: np.zeros(streams) for side in family.sides}
    tops = {side: np.zeros(streams) for side in family.sides}
    for _ in range(max(batches, 1)):
        z = family.simulate(rng, streams)
        for side, path in paths.items():
            path = np.maximum(0.0, path + (z if side == "up" else -z) - k)
            paths[side] = path
            np.maximum(tops[side], path, out=tops[side])
    return {side: float(np.quantile(top, 1 - alpha)) + 1e-9 for side, top in tops.items()}


@dataclass
class FamilyState:
    """A family's running state: the open batch, both CUSUMs, counts and recent batch means."""

    pending: list[float]
    up: float = 0.0
    down: float = 0.0
    batches: int = 0
    values: int = 0
    total: float = 0.0
    recent: list[list[float]] | None = None
    """The last few batches' means (``categories``: shares per class)."""

    @classmethod
    def empty(cls) -> FamilyState:
        """A state with nothing seen."""
        return cls(pending=[], recent=[])

    def add(self, family: Family, value: float, k: float) -> float | None:
        """Add one value; the batch's score when it completed a batch, else None."""
        self.pending.append(value)
        self.values += 1
        self.total += value
        if len(self.pending) < family.batch:
            return None
        batch = np.asarray(self.pending, dtype=np.float64)
        self.pending = []
        if family.kind == "categories":
            width = len(family.probs)
            counts = np.bincount(batch.astype(np.int64).clip(0, width - 1), minlength=width)
            batch = counts.astype(np.float64)
            summary = (batch / family.batch).tolist()
        else:
            summary = [float(batch.mean())]
        z = float(family.score(batch))
        self.up = max(0.0, self.up + z - k)
        self.down = max(0.0, self.down - z - k) if len(family.sides) == 2 else 0.0
        self.batches += 1
        self.recent = [*(self.recent or [])[-4:], summary]
        return z

    def recent_value(self) -> float | list[float] | None:
        """The mean of the last few batches (a class distribution for ``categories``)."""
        if not self.recent:
            return None
        columns = np.asarray(self.recent).mean(axis=0).tolist()
        return columns if len(columns) > 1 else float(columns[0])
