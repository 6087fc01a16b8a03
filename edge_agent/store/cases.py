"""Preprocessed images of screened cases, as PNG files beside the state database, and which of
them the retention limits drop."""

from __future__ import annotations

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

from edge_agent.store.records import Retention

_CASE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def check_case_id(case_id: str) -> str:
    """``case_id`` if it is safe to use as a file name, else ValueError naming it."""
    if not isinstance(case_id, str) or not _CASE_ID.match(case_id):
        raise ValueError(f"invalid case id {case_id!r}: use letters, digits and '-' (a uuid)")
    return case_id


def write_image(directory: Path, case_id: str, image: np.ndarray) -> Path:
    """Write a square uint8 RGB (S, S, 3) or grey (S, S, 1) image as ``<case_id>.png``
    atomically; the file's path."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(
            f"expected a uint8 RGB or grey image (S, S, 3 or 1), got {image.dtype} {image.shape}"
        )
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square preprocessed image, got {image.shape}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{check_case_id(case_id)}.png"
    tmp = directory / f".{case_id}.png.tmp"
    with open(tmp, "wb") as f:
        pixels = image[..., 0] if image.shape[2] == 1 else image
        Image.fromarray(np.ascontiguousarray(pixels)).save(f, format="PNG")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_image(path: Path) -> np.ndarray | None:
    """The image stored at ``path`` (uint8 S x S x 3), None when it is gone or unreadable."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        return None


def remove_image(path: Path) -> None:
    """Delete a stored image; one already gone is fine."""
    path.unlink(missing_ok=True)


def over_retention(conn: sqlite3.Connection, limits: Retention, now: datetime) -> list[str]:
    """The kept images' file names beyond ``limits`` at ``now`` (too old, or past the newest
    ``max_cases``), sorted."""
    doomed: list[str] = []
    if limits.max_age_days is not None:
        cutoff = now - timedelta(days=limits.max_age_days)
        old = conn.execute(
            "SELECT file FROM case_images WHERE saved < ?",
            (cutoff.astimezone(UTC).isoformat(timespec="microseconds"),),
        )
        doomed += [r[0] for r in old]
    if limits.max_cases is not None:
        extra = conn.execute(
            "SELECT file FROM case_images ORDER BY saved DESC, rowid DESC LIMIT -1 OFFSET ?",
            (limits.max_cases,),
        )
        doomed += [r[0] for r in extra]
    return sorted(set(doomed))


def reviewed(
    conn: sqlite3.Connection, directory: Path, *, findings: bool = False
) -> Iterator[tuple[np.ndarray, Any]]:
    """See :meth:`edge_agent.store.Store.reviewed_cases`; images gone from disk are skipped."""
    column = "r.labels" if findings else "r.grade"
    rows = conn.execute(
        f"SELECT ci.file, {column} FROM case_images ci JOIN reviews r ON r.id = "
        "(SELECT MAX(id) FROM reviews WHERE case_id = ci.case_id) "
        f"WHERE r.gradable = 1 AND {column} IS NOT NULL ORDER BY ci.saved, ci.rowid"
    ).fetchall()
    for name, label in rows:
        image = read_image(directory / name)
        if image is not None:
            yield image, (list(json.loads(label)) if findings else int(label))
