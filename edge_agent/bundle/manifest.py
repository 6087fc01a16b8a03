"""The bundle manifest: what a signed bundle holds, and the errors raised when one is refused."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models import DR_GRADING, PreprocessSpec, TaskSpec

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
RESERVED_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
_VERSION_RE = re.compile(r"^\d+(\.\d+){0,3}$")


class BundleError(ValueError):
    """A bundle, manifest or key that must not be used; the message says why and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One file of the bundle: its sha256 (hex) and size in bytes."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class PrecisionEntry(_Strict):
    """One precision the bundle carries: its model file, size and held-out accuracy (%)."""

    file: str
    size_bytes: int = Field(ge=0)
    heldout_accuracy: float | None = None


class Thresholds(_Strict):
    """Decision thresholds: P(referable) at or above ``referral`` refers; gradable likewise."""

    referral: float = Field(ge=0.0, le=1.0)
    gradable: float = Field(0.5, ge=0.0, le=1.0)


class AccuracyBudget(_Strict):
    """How many accuracy points below fp32 each reduced precision may lose."""

    fp16: float = Field(ge=0.0)
    int8: float = Field(ge=0.0)


def check_relpath(name: str) -> str:
    """Return ``name`` if it is a safe relative POSIX path inside a bundle, else raise."""
    bad = (
        not name
        or len(name) > 255
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise BundleError(f"unsafe path {name!r}: bundle paths must be relative, without '..'")
    return str(PurePosixPath(name))


def parse_version(text: str) -> tuple[int, ...]:
    """The leading dotted-number part of a version string as a tuple ('0.1.0.dev1' -> (0,1,0))."""
    match = re.match(r"^\d+(\.\d+)*", text.strip())
    if not match:
        raise BundleError(f"version {text!r} does not start with a number like 1.2.3")
    return tuple(int(p) for p in match.group(0).split("."))


class Manifest(_Strict):
    """The signed description of a bundle (``manifest.json``)."""

    schema_version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=128)
    family: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1, description="monotonic bundle version")
    created: datetime
    labels: tuple[str, ...]
    task: TaskSpec = DR_GRADING
    """The task the model answers (bundles made before task specs are DR grading)."""
    requires: tuple[str, ...] = ()
    """Python packages the model's torch form needs (timm, transformers, ...): a device without
    them serves the ONNX models but sits federated rounds out."""
    preprocess: PreprocessSpec
    thresholds: Thresholds
    accuracy_budget_points: AccuracyBudget
    precisions: dict[str, PrecisionEntry]
    files: dict[str, FileEntry]
    engine_recipe: dict[str, Any] | None = None
    min_agent_version: str
    signer: str = Field(pattern=r"^[0-9a-f]{16}$", description="key id of the signing key")

    @model_validator(mode="after")
    def _preprocessing_is_the_task_input(self) -> Manifest:
        spec, wanted = self.preprocess, self.task.input
        if spec.channels != wanted.channels or spec.crop != wanted.preprocessing:
            raise ValueError(
                f"preprocess ({spec.channels} channel(s), {spec.crop}) is not task "
                f"{self.task.name}'s input ({wanted.channels} channel(s), {wanted.preprocessing})"
            )
        return self

    @model_validator(mode="after")
    def _labels_are_the_task_classes(self) -> Manifest:
        if self.labels != self.task.classes:
            raise ValueError(
                f"labels {list(self.labels)} are not task {self.task.name}'s classes "
                f"{list(self.task.classes)}"
            )
        return self

    @field_validator("min_agent_version")
    @classmethod
    def _min_version(cls, text: str) -> str:
        if not _VERSION_RE.match(text):
            raise ValueError(f"{text!r} is not a dotted version like 0.1.0")
        return text

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if not files:
            raise ValueError("a bundle must list at least one file")
        for name in files:
            check_relpath(name)
            if name in RESERVED_NAMES:
                raise ValueError(f"{name!r} is reserved for the manifest and its signature")
        return files

    @model_validator(mode="after")
    def _precision_files(self) -> Manifest:
        if not self.precisions:
            raise ValueError("a bundle must carry at least one precision")
        for precision, entry in self.precisions.items():
            if entry.file not in self.files:
                raise ValueError(f"precision {precision!r} names {entry.file!r}, not in files")
        return self

    def to_bytes(self) -> bytes:
        """The canonical manifest bytes (sorted keys, UTF-8) that are signed."""
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)
        return (text + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> Manifest:
        """Parse manifest bytes; a ``BundleError`` names ``source`` and the bad field."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise BundleError(
                f"{source}: invalid manifest field {where}: {first['msg']}"
                f" ({exc.error_count()} problem(s)); rebuild the bundle with a matching fovea"
            ) from None


def manifest_digest(directory: Path) -> str:
    """sha256 (hex) of the exact ``manifest.json`` bytes in ``directory``: the bundle's digest."""
    return hashlib.sha256((directory / MANIFEST_NAME).read_bytes()).hexdigest()
