"""The update history: one JSON line per install, rollback or interrupted install."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

UpdateStatus = Literal["installed", "rolled-back", "refused", "failed", "interrupted"]


class UpdateRecord(BaseModel):
    """One entry of ``updates.jsonl``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    action: Literal["install", "rollback"]
    status: UpdateStatus
    from_version: int | None = None
    to_version: int | None = None
    slot: str | None = None
    detail: str = ""
    attempt: str | None = Field(None, description="id of the install or rollback attempt")


def record_update(log: Path, record: UpdateRecord) -> None:
    """Append ``record`` to the JSON-lines ``log`` and fsync it."""
    line = record.model_dump_json() + "\n"
    if log.exists() and log.stat().st_size:
        with log.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line  # end a line torn by a power loss before appending
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_updates(log: Path) -> list[UpdateRecord]:
    """Every record of ``log``, oldest first; lines torn by a power loss are skipped."""
    if not log.exists():
        return []
    records: list[UpdateRecord] = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        try:
            data = json.loads(line)
        except ValueError:
            continue  # an append cut short by a crash: not JSON at all
        try:
            records.append(UpdateRecord.model_validate(data))
        except ValidationError as exc:
            raise ValueError(
                f"{log}:{number}: not an update record ({exc.errors()[0]['msg']})"
            ) from None
    return records
