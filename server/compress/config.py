"""``fovea compress`` settings: a teacher, a starting model, and a declared sequence of steps.

```yaml
schema_version: 1
teacher: runs/teacher/teacher.json
start: teacher            # or a checkpoint path, or {model: resnet-student} (fresh weights)
distill:                  # base settings of every recovery distillation (a distill config)
  data: {dir: data/synth}
  train: {epochs: 3}
steps:
  - kind: reduce_layers
    target_fraction: 0.5
  - kind: prune_channels
    target_fraction: 0.05
    rounds: 2
  - kind: qat
    epochs: 1
out: runs/compress
```

Each step entry is ``kind`` (and an optional ``name``) plus that kind's own settings; unknown
keys are errors that name the step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.compress.steps import StepSettings, parse_settings
from server.distill import DistillConfig
from server.training import ConfigError, ModelRef, read_yaml, validate

SCHEMA_VERSION = 1


class StartModel(BaseModel):
    """A fresh registry model to start from (its weights untrained)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef


class Step(BaseModel):
    """One declared step: its kind, display name and validated settings."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: str
    name: str
    settings: StepSettings

    def digest(self) -> str:
        """What identifies this step's work for resume (kind and settings)."""
        data = {"kind": self.kind, "settings": self.settings.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def as_json(self) -> dict[str, Any]:
        """The step as it was declared."""
        return {"kind": self.kind, "name": self.name, **self.settings.model_dump(mode="json")}


class CompressConfig(BaseModel):
    """One compression run."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    teacher: Path | None = None
    """Teacher checkpoint; also the model the first step starts from with ``start: teacher``."""
    start: Literal["teacher"] | Path | StartModel = "teacher"
    distill: DistillConfig = Field(default_factory=DistillConfig)
    """Base distillation settings; its ``teacher``, ``student`` and ``out`` are ignored."""
    steps: list[Step]
    out: Path = Path("runs/compress")
    latency_runs: int = Field(20, ge=0)
    """Timed passes per point of the compression curve (0: skip latency)."""

    @field_validator("steps", mode="before")
    @classmethod
    def _parse_steps(cls, value: Any) -> list[Step]:
        if not isinstance(value, list) or not value:
            raise ValueError("steps must be a non-empty list of {kind: ..., settings ...}")
        steps = []
        for i, entry in enumerate(value):
            if isinstance(entry, Step):
                steps.append(entry)
                continue
            if not isinstance(entry, dict) or "kind" not in entry:
                raise ValueError(f"step {i + 1} must be a mapping with a 'kind'")
            rest = {k: v for k, v in entry.items() if k not in ("kind", "name")}
            kind = str(entry["kind"])
            try:
                settings = parse_settings(kind, rest)
            except ValueError as e:
                raise ValueError(f"step {i + 1} ({kind}): {e}") from None
            steps.append(Step(kind=kind, name=str(entry.get("name", kind)), settings=settings))
        return steps

    @model_validator(mode="after")
    def _check(self) -> CompressConfig:
        if self.start == "teacher" and self.teacher is None:
            raise ValueError("start: teacher needs a teacher checkpoint")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique, got {names}")
        return self

    def run_distill_config(self) -> DistillConfig:
        """The distill settings as the export stage reads them (teacher and out filled in)."""
        return self.distill.model_copy(update={"teacher": self.teacher, "out": self.out})

    def dump(self) -> dict[str, Any]:
        """The resolved config as plain data."""
        data = self.model_dump(mode="json", exclude={"steps"})
        data["steps"] = [s.as_json() for s in self.steps]
        return data


def parse_compress_config(data: Any, source: str = "<config>") -> CompressConfig:
    """Validate a mapping (as read from YAML) into a :class:`CompressConfig`."""
    return validate(CompressConfig, data, source, "compression config")


def load_compress_config(path: str | Path) -> CompressConfig:
    """Read a YAML compression config (``yaml.safe_load``: data only, never code)."""
    return parse_compress_config(read_yaml(path), str(path))


__all__ = ["CompressConfig", "ConfigError", "Step", "load_compress_config", "parse_compress_config"]
