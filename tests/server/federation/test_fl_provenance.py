"""Provenance from the registry, the last validated model and how a person marks one, and the
registry's decision record with the gate and provenance (and its migration from schema 1)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from server.federation.provenance import (
    PROVENANCE_FILE,
    ModelRef,
    last_validated,
    mark_validated,
    provenance_from_registry,
    read_provenance,
    write_provenance,
)
from server.federation.registry import _SCHEMA, DecisionRecord, Participant, Registry, RoundRecord
from server.federation.weights import save_weights, weights_digest


def _model(root: Path, seed: int) -> Path:
    """An export-like directory with ``checkpoint/model.json`` and its weights."""
    (root / "checkpoint").mkdir(parents=True)
    ckpt = root / "checkpoint" / "model.json"
    ckpt.write_text("{}")
    weights = {"w": np.random.default_rng(seed).normal(size=4).astype(np.float32)}
    save_weights(weights, ckpt.with_suffix(".safetensors"))
    return ckpt


def _train(node: int, outcome: str, cases: float) -> Participant:
    return Participant(node, "train", outcome, "", {"num-examples": cases})


def test_provenance_names_the_sites_rounds_and_cases(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.db")
    reg.set_meta("sites", {"1": "clinic-1", "2": "clinic-2", "3": "clinic-3"})
    reg.record_round(RoundRecord(0, "baseline", 0, 1, 3, 3, 3), [])
    reg.record_round(
        RoundRecord(1, "done", 0, 1, 3, 3, 2),
        [_train(1, "accepted", 36), _train(2, "accepted", 30), _train(3, "rejected", 28),
         Participant(1, "evaluate", "accepted", "", {"num-examples": 9})],
    )  # fmt: skip
    reg.record_round(RoundRecord(2, "insufficient", 0, 1, 3, 1, 1), [_train(1, "accepted", 40)])
    reg.record_round(
        RoundRecord(3, "done", 0, 1, 3, 3, 2),
        [_train(1, "accepted", 40), _train(3, "accepted", 29)],
    )
    ref = ModelRef(path="/m/model.json", digest="a" * 64, validated_by="distillation export")
    p = provenance_from_registry(reg, 3, ref, ref, "fedprox")
    assert p.rounds == [1, 3]  # round 2 made no aggregate
    got = {s.site: (s.rounds, s.cases_per_round, s.cases) for s in p.sites}
    assert got == {
        "clinic-1": ([1, 3], {1: 36, 3: 40}, 40),
        "clinic-2": ([1], {1: 30}, 30),
        "clinic-3": ([3], {3: 29}, 29),  # its rejected round-1 update is not counted
    }
    assert p.cases == 99 and p.validated.validated_by == "distillation export"
    write_provenance(tmp_path, p)
    assert read_provenance(tmp_path) == p
    assert json.loads((tmp_path / PROVENANCE_FILE).read_text())["schema_version"] == 1


def test_the_last_validated_model_follows_the_lineage(tmp_path: Path) -> None:
    v1 = _model(tmp_path / "v1", 1)
    # straight from distillation and export: the model itself
    first = last_validated(v1)
    assert first.path == str(v1) and first.validated_by == "distillation export"
    # a promoted model inherits the validated model it was gated against
    v2 = _model(tmp_path / "v2", 2)
    p = provenance_from_registry(Registry(tmp_path / "r.db"), 0, first, first, "fedprox")
    write_provenance(v2.parents[1], p)
    assert last_validated(v2) == first
    # a person validates v2: runs from v2 gate against v2 itself
    marked = mark_validated(v2.parents[1], "Dr. Okafor", "reviewed 300 cases")
    again = last_validated(v2)
    assert again.path == str(v2) and again.validated_by == "Dr. Okafor"
    assert again.digest == marked.digest != first.digest
    # run config 'validated-model' overrides
    assert last_validated(v2, override=v1.parents[1]).digest == first.digest
    with pytest.raises(ValueError, match="--by"):
        mark_validated(v2.parents[1], " ")


def test_a_validated_model_that_is_gone_is_named(tmp_path: Path) -> None:
    v2 = _model(tmp_path / "v2", 2)
    gone = ModelRef(path=str(tmp_path / "v1" / "checkpoint" / "model.json"), digest="b" * 64)
    p = provenance_from_registry(Registry(tmp_path / "r.db"), 0, gone, gone, "fedprox")
    write_provenance(v2.parents[1], p)
    with pytest.raises(ValueError, match="validated-model"):
        last_validated(v2)


def test_decisions_carry_the_gate_and_provenance_and_validations_are_kept(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.db")
    gate = {"verdict": "keep", "margin": 2.5, "comparisons": [{"metric": "accuracy"}]}
    reg.record_decision(
        DecisionRecord(2, False, "kept", {"accuracy": 70.0}, {"accuracy": 72.0}, gate=gate,
                       provenance={"cases": 99})
    )  # fmt: skip
    (d,) = reg.decisions()
    assert d.gate == gate and d.provenance == {"cases": 99}
    assert json.loads(json.dumps(d.to_json()))["gate"]["margin"] == 2.5
    v = _model(tmp_path / "v1", 1)
    reg.record_validation(last_validated(v).model_dump(mode="json"))
    from safetensors.numpy import load_file

    digest = weights_digest(dict(load_file(str(v.with_suffix(".safetensors")))))
    assert [x["digest"] for x in reg.validations()] == [digest]


def test_a_schema_1_registry_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute(
        "INSERT INTO decisions (created, round, promoted, reason, candidate, deployed, per_site) "
        "VALUES (1.0, 3, 0, 'old', '{}', '{}', '{}')"
    )
    db.commit()
    db.close()
    (d,) = Registry(path).decisions()
    assert d.reason == "old" and d.gate == {} and d.provenance == {}


def test_fovea_federation_validate_marks_a_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from server.cli.federation import federation_app

    v2 = _model(tmp_path / "v2", 2)
    run = ["validate", str(v2.parents[1]), "--by", "Dr. Okafor", "--run-dir", str(tmp_path)]
    result = CliRunner().invoke(federation_app, run)
    assert result.exit_code == 0, result.output
    assert last_validated(v2).validated_by == "Dr. Okafor"
    (recorded,) = Registry(tmp_path / "registry.db").validations()
    assert recorded["path"] == str(v2) and recorded["validated_by"] == "Dr. Okafor"
    missing = CliRunner().invoke(federation_app, ["validate", str(tmp_path / "none"), "--by", "x"])
    assert missing.exit_code == 2 and "not an export or bundle" in " ".join(missing.output.split())
