"""Preprocessed images of screened cases, as PNG files beside the state database, and which of
them the retention limits drop."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_agent.store.digests import image_digest
from edge_agent.store.reconcile import Trusted
from edge_agent.store.records import Retention

_CASE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def check_case_id(case_id: str) -> str:
    """``case_id`` if it is safe to use as a file name, else ValueError naming it."""
    if not isinstance(case_id, str) or not _CASE_ID.match(case_id):
        raise ValueError(f"invalid case id {case_id!r}: use letters, digits and '-' (a uuid)")
    return case_id


def write_image(directory: Path, case_id: str, image: np.ndarray) -> tuple[Path, str]:
    """Write a square uint8 RGB (S, S, 3) or grey (S, S, 1) image as ``<case_id>.png``
    atomically; the file's path and the sha256 of its bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(
            f"expected a uint8 RGB or grey image (S, S, 3 or 1), got {image.dtype} {image.shape}"
        )
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square preprocessed image, got {image.shape}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{check_case_id(case_id)}.png"
    tmp = directory / f".{case_id}.png.tmp"
    buffer = io.BytesIO()
    pixels = image[..., 0] if image.shape[2] == 1 else image
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    data = buffer.getvalue()
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path, image_digest(data)


def read_image(path: Path, sha256: str | None = None) -> np.ndarray | None:
    """The image stored at ``path`` (uint8 S x S x 3), None when it is gone or unreadable, or
    when its bytes do not have the digest ``sha256``."""
    try:
        data = path.read_bytes()
        if sha256 is not None and image_digest(data) != sha256:
            return None
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        return None


def remove_image(path: Path) -> None:
    """Delete a stored image; one already gone is fine."""
    path.unlink(missing_ok=True)


def over_retention(conn: sqlite3.Connection, limits: Retention, now: datetime) -> dict[str, str]:
    """The kept images beyond ``limits`` at ``now`` (too old, or past the newest
    ``max_cases``): their file names by case id, sorted."""
    doomed: dict[str, str] = {}
    if limits.max_age_days is not None:
        cutoff = now - timedelta(days=limits.max_age_days)
        old = conn.execute(
            "SELECT case_id, file FROM case_images WHERE saved < ?",
            (cutoff.astimezone(UTC).isoformat(timespec="microseconds"),),
        )
        doomed.update(old.fetchall())
    if limits.max_cases is not None:
        extra = conn.execute(
            "SELECT case_id, file FROM case_images ORDER BY saved DESC, rowid DESC "
            "LIMIT -1 OFFSET ?",
            (limits.max_cases,),
        )
        doomed.update(extra.fetchall())
    return dict(sorted(doomed.items()))


def reviewed(
    conn: sqlite3.Connection,
    directory: Path,
    trusted: Trusted,
    *,
    findings: bool = False,
    skipped: list[str] | None = None,
) -> Iterator[tuple[np.ndarray, Any]]:
    """See :meth:`edge_agent.store.Store.reviewed_cases`; images gone from disk are skipped,
    and so are cases whose rows or image are not ``trusted`` (named in ``skipped``)."""
    column = "r.labels" if findings else "r.grade"
    rows = conn.execute(
        f"SELECT ci.case_id, r.id, ci.file, {column} FROM case_images ci JOIN reviews r ON "
        "r.id = (SELECT MAX(id) FROM reviews WHERE case_id = ci.case_id) "
        f"WHERE r.gradable = 1 AND {column} IS NOT NULL ORDER BY ci.saved, ci.rowid"
    ).fetchall()
    for case_id, review_id, name, label in rows:
        why = _distrust(trusted, case_id, review_id)
        sha = trusted.images.get(case_id)
        image = None if why else read_image(directory / name, sha)
        if image is None and sha is not None and not why and (directory / name).is_file():
            why = f"case {case_id}: its image differs from its audit entry (or is unreadable)"
        if why and skipped is not None:
            skipped.append(why)
        if image is not None:
            yield image, (list(json.loads(label)) if findings else int(label))


def _distrust(trusted: Trusted, case_id: str, review_id: int) -> str | None:
    """Why a case's rows do not verify, or None."""
    if case_id not in trusted.screenings:
        return f"case {case_id}: its screening does not match an audit entry"
    if review_id not in trusted.reviews:
        return f"case {case_id}: review {review_id} does not match an audit entry"
    if case_id not in trusted.images:
        return f"case {case_id}: its image has no audit entry"
    return None


def reviewed_outcomes(
    conn: sqlite3.Connection, trusted: Trusted, model_version: int | None = None
) -> list[tuple[float, int]]:
    """(the model's P(refer) at screening, the clinician's class) of every case whose latest
    review is gradable with a class, and whose screening and review verify; with
    ``model_version``, only cases that model version screened (another model's scores differ)."""
    rows = conn.execute(
        "SELECT s.case_id, s.result, r.id, r.grade FROM screenings s JOIN reviews r ON "
        "r.id = (SELECT MAX(id) FROM reviews WHERE case_id = s.case_id) "
        "WHERE r.gradable = 1 AND r.grade IS NOT NULL "
        "AND (? IS NULL OR s.model_version = ?) ORDER BY s.rowid",
        (model_version, model_version),
    ).fetchall()
    out = []
    for case_id, result, review_id, grade in rows:
        if _distrust_rows(trusted, case_id, review_id):
            continue
        score = json.loads(result).get("referable_probability")
        if isinstance(score, int | float):
            out.append((float(score), int(grade)))
    return out


def _distrust_rows(trusted: Trusted, case_id: str, review_id: int) -> bool:
    return case_id not in trusted.screenings or review_id not in trusted.reviews
