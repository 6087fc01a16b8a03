"""What the store hands back: users, cases, reviews, updates, and the retention setting."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class User:
    """An account: its name, role (technician, clinician or admin) and state."""

    name: str
    role: str
    created: str
    disabled: bool


@dataclass(frozen=True)
class Review:
    """A clinician's verdict on a case; a case may be reviewed again, the latest wins.

    ``grade`` is the class index (single-label tasks; for DR the grade), ``labels`` the class
    names given (a multilabel review's findings; None for reviews made by grade alone).
    """

    id: int
    case_id: str
    user: str
    grade: int | None
    gradable: bool
    comment: str
    created: str
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Case:
    """One screening: who ran it, on which model, what was asked and answered, and reviews."""

    case_id: str
    created: str
    user: str
    model_version: int | None
    request: dict[str, Any]
    result: dict[str, Any]
    reviews: tuple[Review, ...] = field(default=())

    @property
    def latest_review(self) -> Review | None:
        """The review that counts: the most recent one."""
        return self.reviews[-1] if self.reviews else None

    @property
    def referral_threshold(self) -> float | None:
        """The threshold on P(refer) the case was screened at (None: recorded before cases
        kept it)."""
        value = self.result.get("referral_threshold")
        return None if value is None else float(value)


@dataclass(frozen=True)
class Update:
    """One model install or rollback on this device."""

    id: int
    time: str
    from_version: int | None
    to_version: int | None
    slot: str
    status: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Retention:
    """How many reviewed-case images to keep, and for how long (None: no limit)."""

    max_cases: int | None = 5000
    max_age_days: float | None = 365.0

    def __post_init__(self) -> None:
        if self.max_cases is not None and self.max_cases < 0:
            raise ValueError(f"retention max_cases must be >= 0, got {self.max_cases}")
        if self.max_age_days is not None and self.max_age_days <= 0:
            raise ValueError(f"retention max_age_days must be > 0, got {self.max_age_days}")


def review_from_row(r: sqlite3.Row) -> Review:
    """A review from its database row."""
    ok = bool(r["gradable"])
    labels = tuple(json.loads(r["labels"])) if r["labels"] is not None else None
    return Review(
        r["id"], r["case_id"], r["user"], r["grade"], ok, r["comment"], r["created"], labels
    )


def update_from_row(r: sqlite3.Row) -> Update:
    """An update from its database row."""
    detail = json.loads(r["detail"])
    return Update(
        r["id"], r["time"], r["from_version"], r["to_version"], r["slot"], r["status"], detail
    )
