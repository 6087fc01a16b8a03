"""Where a promoted model came from, and which model a person last validated.

A bundle the federation promotes carries ``provenance.json`` (hashed by the signed manifest
like every file of the bundle): the rounds whose aggregates made it, each site that contributed
with its case counts per round, the model the run started from and the last model a person
validated, which the gate compared it with.

The last validated model is, in order: run config ``validated-model``; the deployed model
itself when its directory holds ``validation.json`` (written by ``fovea federation validate``);
the validated model named by the deployed model's own ``provenance.json`` (a promoted model
inherits the reference it was gated against); else the deployed model itself (a model straight
from distillation and export, validated with its export's report).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.federation.registry import Registry
from server.federation.weights import load_weights, resolve_checkpoint, weights_digest

__all__ = [
    "PROVENANCE_FILE",
    "VALIDATION_FILE",
    "ModelRef",
    "Provenance",
    "SiteContribution",
    "last_validated",
    "mark_validated",
    "model_dir",
    "provenance_from_registry",
    "read_provenance",
    "write_provenance",
]

PROVENANCE_FILE = "provenance.json"
VALIDATION_FILE = "validation.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Record):
    """A model by its checkpoint JSON and weights digest; ``validated_by`` when a person (or
    the distillation export's validation) vouched for it."""

    path: str
    digest: str
    version: int | None = None
    validated_by: str | None = None
    validated_at: float | None = None
    note: str = ""


class SiteContribution(_Record):
    """One site's part: the rounds its update was accepted in, and its cases in each."""

    site: str
    rounds: list[int]
    cases_per_round: dict[int, int]
    cases: int = Field(ge=0)
    """Cases in its largest round (rounds reuse a site's cases, so they are not summed)."""


class Provenance(_Record):
    """What ``provenance.json`` holds."""

    schema_version: Literal[1] = 1
    created: float
    strategy: str
    rounds: list[int]
    """The rounds whose aggregate went into the promoted weights."""
    sites: list[SiteContribution]
    cases: int = Field(ge=0)
    """The contributing sites' cases together (each site's largest round)."""
    started_from: ModelRef
    validated: ModelRef
    """The last model a person validated: the gate's second reference."""


def model_dir(checkpoint_json: Path) -> Path:
    """The export, bundle or slot directory a checkpoint JSON belongs to."""
    parent = checkpoint_json.parent
    return parent.parent if parent.name == "checkpoint" else parent


def provenance_from_registry(
    registry: Registry, last_round: int, started_from: ModelRef, validated: ModelRef,
    strategy: str,
) -> Provenance:  # fmt: skip
    """The provenance of the global weights after ``last_round``, from the run's registry."""
    names = dict(registry.meta().get("sites") or {})
    done = [r.round for r in registry.rounds() if 0 < r.round <= last_round and r.status == "done"]
    per_site: dict[str, dict[int, int]] = {}
    for rnd, p in registry.participants():
        if rnd in done and p.phase == "train" and p.outcome == "accepted":
            name = names.get(str(p.node_id), f"node-{p.node_id}")
            per_site.setdefault(name, {})[rnd] = int(p.metrics.get("num-examples", 0))
    sites = [
        SiteContribution(site=s, rounds=sorted(c), cases_per_round=c, cases=max(c.values()))
        for s, c in sorted(per_site.items())
    ]
    return Provenance(
        created=time.time(), strategy=strategy, rounds=done, sites=sites,
        cases=sum(s.cases for s in sites), started_from=started_from, validated=validated,
    )  # fmt: skip


def write_provenance(directory: Path, provenance: Provenance) -> Path:
    """Write ``provenance.json`` into an export directory (before it is bundled)."""
    path = directory / PROVENANCE_FILE
    path.write_text(provenance.model_dump_json(indent=2) + "\n")
    return path


def read_provenance(directory: Path) -> Provenance | None:
    """The directory's ``provenance.json``, or None for a model that has none."""
    path = directory / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return Provenance.model_validate_json(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{path}: not a federation provenance file: {e}") from None


def _ref(checkpoint_json: Path, **about: Any) -> ModelRef:
    digest = weights_digest(load_weights(checkpoint_json))
    return ModelRef(path=str(checkpoint_json), digest=digest, **about)


def last_validated(
    deployed_checkpoint: Path, override: Path | None = None, version: int | None = None
) -> ModelRef:
    """The last model a person validated, for a run starting from ``deployed_checkpoint``
    (the order is in the module's docstring). ``ValueError`` names a reference that is gone."""
    if override is not None:
        return _ref(resolve_checkpoint(override), validated_by="run config 'validated-model'")
    home = model_dir(deployed_checkpoint)
    record = home / VALIDATION_FILE
    if record.is_file():
        data = json.loads(record.read_text())
        return _ref(
            deployed_checkpoint, version=version, validated_by=str(data.get("by", "")),
            validated_at=data.get("at"), note=str(data.get("note", "")),
        )  # fmt: skip
    provenance = read_provenance(home)
    if provenance is not None:
        ref = provenance.validated
        if not Path(ref.path).is_file():
            raise ValueError(
                f"{home / PROVENANCE_FILE} names the last validated model {ref.path}, which is "
                "gone; set run config 'validated-model' to it (or mark this model validated "
                "with `fovea federation validate`)"
            )
        return ref
    return _ref(
        deployed_checkpoint, version=version, validated_by="distillation export",
        note="no federation provenance: the model came from distillation and export",
    )  # fmt: skip


def mark_validated(directory: Path, by: str, note: str = "") -> ModelRef:
    """Record that a person validated the model in ``directory`` (``validation.json``); runs
    that start from it gate against it from then on."""
    if not by.strip():
        raise ValueError("say who validated the model (--by NAME)")
    checkpoint = resolve_checkpoint(directory)
    at = time.time()
    record = {"schema_version": 1, "by": by, "at": at, "note": note}
    (model_dir(checkpoint) / VALIDATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return _ref(checkpoint, validated_by=by, validated_at=at, note=note)
