"""What the audit chain holds of a clinical row: the sha256 of its canonical content.

A row's key (a screening's ``case_id``, a review's ``id``) is not part of its digest: the chain
entry names the key beside the digest, so a row that holds another row's content (a swap, a
renumbering) is recognised by its digest and named as such.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

SCREEN = "screen"
REVIEW = "review"
IMAGE = "case.image"
RETENTION = "retention"
KEYED = "audit.keyed"
REKEYED = "audit.rekeyed"
"""A new device key after the old one was lost: like ``audit.keyed``, it opens a keyed part."""
CLINICAL_ACTIONS: frozenset[str] = frozenset({SCREEN, REVIEW, IMAGE, RETENTION, KEYED, REKEYED})
"""Actions only the store itself may append (their entries vouch for rows)."""

SCREENING_COLUMNS = "case_id, created, user, model_version, request, result"
REVIEW_COLUMNS = "id, case_id, user, grade, labels, gradable, comment, created"


def _digest(fields: list[Any]) -> str:
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def screening_digest(
    created: str, user: str, model_version: int | None, request: str, result: str
) -> str:
    """sha256 of a screening's content (request and result as the JSON text stored)."""
    return _digest(["screening", created, user, model_version, request, result])


def review_digest(
    case_id: str,
    user: str,
    grade: int | None,
    labels: str | None,
    gradable: bool | int,
    comment: str,
    created: str,
) -> str:
    """sha256 of a review's content (``labels`` as the JSON text stored, or None)."""
    return _digest(["review", case_id, user, grade, labels, int(gradable), comment, created])


def image_digest(data: bytes) -> str:
    """sha256 of a kept case image's file."""
    return hashlib.sha256(data).hexdigest()


def screening_row_digest(row: sqlite3.Row | tuple[Any, ...]) -> str:
    """The digest of a ``SELECT {SCREENING_COLUMNS}`` row."""
    _, created, user, model_version, request, result = tuple(row)
    return screening_digest(created, user, model_version, request, result)


def review_row_digest(row: sqlite3.Row | tuple[Any, ...]) -> str:
    """The digest of a ``SELECT {REVIEW_COLUMNS}`` row."""
    _, case_id, user, grade, labels, gradable, comment, created = tuple(row)
    return review_digest(case_id, user, grade, labels, gradable, comment, created)


def screening_entry(case_id: str, model_version: int | None, digest: str) -> dict[str, Any]:
    """The detail of a screening's audit entry."""
    return {"case_id": case_id, "model_version": model_version, "sha256": digest}


def review_entry(
    review_id: int,
    case_id: str,
    grade: int | None,
    gradable: bool,
    labels: list[str] | None,
    digest: str,
) -> dict[str, Any]:
    """The detail of a review's audit entry."""
    detail: dict[str, Any] = {"review_id": review_id, "case_id": case_id, "grade": grade}
    detail["gradable"] = bool(gradable)
    if labels is not None:
        detail["labels"] = labels
    detail["sha256"] = digest
    return detail
