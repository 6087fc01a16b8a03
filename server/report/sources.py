"""Where the report's inputs live in a demo workdir, and reading them without failing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Unreadable", "Workdir", "read_json", "read_jsonl"]


class Unreadable(ValueError):
    """An input exists but cannot be read; the message names the file."""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Unreadable(f"{path}: {e}") from e
    if not isinstance(value, dict):
        raise Unreadable(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]] | None:
    """One JSON object per line of ``path`` (blank or broken lines skipped); None when missing."""
    if not path.is_file():
        return None
    records = []
    for line in path.read_text().splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue  # a line cut short by an interrupted run
        if isinstance(value, dict):
            records.append(value)
    return records


@dataclass(frozen=True)
class Workdir:
    """The layout ``fovea demo`` writes under its workdir."""

    root: Path

    @property
    def data(self) -> Path:
        """The synthetic dataset (``site-*.npz``)."""
        return self.root / "data"

    @property
    def teacher(self) -> Path:
        """The teacher's run directory."""
        return self.root / "teacher"

    @property
    def student(self) -> Path:
        """The distilled student's run directory (metrics.json, monitor.jsonl)."""
        return self.root / "student"

    @property
    def export(self) -> Path:
        """The student's export directory (ONNX files, export.json)."""
        return self.student / "export"

    @property
    def fleet_db(self) -> Path:
        """The fleet inventory."""
        return self.root / "fleet.db"

    def site_files(self) -> list[Path]:
        """The per-site data files, sorted by site name."""
        return sorted(self.data.glob("site-*.npz")) if self.data.is_dir() else []

    def registry(self) -> Path | None:
        """The newest federation registry under ``federation/`` (the run dir or below it)."""
        base = self.root / "federation"
        if not base.is_dir():
            return None
        found = sorted(base.rglob("registry.db"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def held_out_site(self) -> str | None:
        """The site the student never trained on (its config's ``data.test_site``)."""
        path = self.student / "config.yaml"
        if not path.is_file():
            return None
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return None
        data = config.get("data") if isinstance(config, dict) else None
        site = data.get("test_site") if isinstance(data, dict) else None
        return str(site) if site else None
