"""Build and sign a bundle tar from a ``fovea export`` directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploy.keys import load_private_key
from edge_agent import agent_version
from edge_agent.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    AccuracyBudget,
    BundleError,
    FileEntry,
    Manifest,
    PrecisionEntry,
    Thresholds,
    fsync_dir,
    key_id,
    parse_version,
)
from models import DR_GRADING, PreprocessSpec, TaskSpec

EXPORT_JSON = "export.json"
RECIPE_JSON = "recipe.json"


# export.json belongs to server/export and carries much more (parity, latency, lint ...);
# the bundle reads only the fields below, so unknown keys are ignored rather than refused.
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _ExportModel(_Loose):
    name: str
    family: str


class _ExportHeldout(_Loose):
    accuracy: float | None = None


class _ExportPrecision(_Loose):
    file: str
    size_bytes: int = Field(ge=0)
    heldout: _ExportHeldout = _ExportHeldout()


class _ExportBudget(_Loose):
    int8_points: float
    fp16_points: float


class _ExportOperatingPoint(_Loose):
    referral_threshold: float


class _ExportInfo(_Loose):
    schema_version: int
    model: _ExportModel
    task: TaskSpec = DR_GRADING  # exports made before task specs are DR grading
    requires: tuple[str, ...] = ()
    preprocess: PreprocessSpec
    budget: _ExportBudget
    operating_point: _ExportOperatingPoint
    precisions: dict[str, _ExportPrecision]


def _read_export(export_dir: Path) -> _ExportInfo:
    path = export_dir / EXPORT_JSON
    if not path.is_file():
        raise BundleError(f"{path} is missing: is {export_dir} a `fovea export` directory?")
    try:
        return _ExportInfo.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{path}: field {where}: {first['msg']}; re-run fovea export") from None


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def collect_files(export_dir: Path) -> dict[str, FileEntry]:
    """sha256 and size of every regular file under ``export_dir``; links and devices refused."""
    files: dict[str, FileEntry] = {}
    for dirpath, dirnames, filenames in os.walk(export_dir):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{path} is a link or special file; bundles hold regular files")
            rel = path.relative_to(export_dir).as_posix()
            files[rel] = FileEntry(sha256=_sha256(path), size=info.st_size)
    return files


def manifest_from_export(
    export_dir: Path,
    *,
    version: int,
    signer: str,
    min_agent_version: str | None = None,
) -> Manifest:
    """The manifest of a bundle of ``export_dir`` (not yet signed; ``signer`` is the key id)."""
    info = _read_export(export_dir)
    recipe_path = export_dir / RECIPE_JSON
    recipe: dict[str, Any] | None = None
    if recipe_path.is_file():
        recipe = json.loads(recipe_path.read_text())
    precisions = {
        name: PrecisionEntry(file=p.file, size_bytes=p.size_bytes, heldout_accuracy=acc)
        for name, p in info.precisions.items()
        for acc in [p.heldout.accuracy]
    }
    min_version = min_agent_version or ".".join(str(v) for v in parse_version(agent_version()))
    try:
        return Manifest(
            name=info.model.name,
            family=info.model.family,
            version=version,
            created=datetime.now(UTC),
            labels=info.task.classes,
            task=info.task,
            requires=info.requires,
            preprocess=info.preprocess,
            thresholds=Thresholds(referral=info.operating_point.referral_threshold),
            accuracy_budget_points=AccuracyBudget(
                fp16=info.budget.fp16_points, int8=info.budget.int8_points
            ),
            precisions=precisions,
            files=collect_files(export_dir),
            engine_recipe=recipe,
            min_agent_version=min_version,
            signer=signer,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{export_dir}: cannot make a manifest: {where}: {first['msg']}"
        raise BundleError(message) from None


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_bundle(
    export_dir: Path,
    out: Path,
    version: int,
    private_key_path: Path,
    *,
    min_agent_version: str | None = None,
) -> Path:
    """Write a signed bundle tar of ``export_dir`` to ``out`` and return ``out``.

    The tar holds ``manifest.json``, ``manifest.sig`` (Ed25519 over the exact manifest bytes)
    and every file of the export directory under its relative path.
    """
    key = load_private_key(private_key_path)
    manifest = manifest_from_export(
        export_dir,
        version=version,
        signer=key_id(key.public_key()),
        min_agent_version=min_agent_version,
    )
    data = manifest.to_bytes()
    signature = key.sign(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info(MANIFEST_NAME, len(data)), io.BytesIO(data))
        tar.addfile(_tar_info(SIGNATURE_NAME, len(signature)), io.BytesIO(signature))
        for rel, entry in manifest.files.items():
            with (export_dir / rel).open("rb") as f:
                tar.addfile(_tar_info(rel, entry.size), f)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    fsync_dir(out.parent)
    return out
