"""Promotion: both outcomes with a tiny model, export and signed bundle; the bundle carries the
sites, rounds and case counts behind it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from server.federation.evaluation import load_heldout
from server.federation.promotion import PackageConfig, promote
from server.federation.provenance import ModelRef, Provenance, SiteContribution
from server.federation.weights import load_weights, resolve_checkpoint

TINY_EXPORT = {
    "precisions": ["fp32"],
    "calibration_size": 32,
    "min_calibration": 16,
    "golden_size": 4,
    "validation_size": 32,
    "heldout_limit": 64,
    "latency_runs": 1,
    "throughput_batch": 4,
    "threads": 1,
}


def test_resolve_checkpoint_from_export_dir(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "model.json").write_text("{}")
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoint" / "model.json"
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        (tmp_path / "empty").mkdir()
        resolve_checkpoint(tmp_path / "empty")


def _provenance(checkpoint: Path) -> Provenance:
    ref = ModelRef(path=str(checkpoint), digest="0" * 64, validated_by="distillation export")
    sites = [
        SiteContribution(site="clinic-1", rounds=[1, 2], cases_per_round={1: 36, 2: 40}, cases=40),
        SiteContribution(site="clinic-2", rounds=[2], cases_per_round={2: 30}, cases=30),
    ]
    return Provenance(created=0.0, strategy="fedprox", rounds=[1, 2], sites=sites, cases=70,
                      started_from=ref, validated=ref)  # fmt: skip


@pytest.mark.slow
def test_promotes_a_good_candidate_to_the_next_signed_bundle(
    tiny_teacher: Path, tmp_path: Path
) -> None:
    from deploy.bundle import verify
    from deploy.keys import generate_keypair

    key, _ = generate_keypair(tmp_path / "keys", "fed")
    export_cfg = tmp_path / "export.yaml"
    # the deployed INT8 came from QAT (fovea compress): the candidate has no QAT model, so its
    # INT8 is calibrated instead of the packaging failing
    qat = {"precisions": ["fp32", "int8"], "int8_source": "qat", "calibration_methods": ["MinMax"]}
    export_cfg.write_text(yaml.safe_dump(TINY_EXPORT | qat | {"max_excluded": 0}))
    distill_cfg = tiny_teacher.parent / "config.yaml"
    heldout = load_heldout(distill_cfg, 96)
    deployed = load_weights(tiny_teacher)
    rng = np.random.default_rng(0)
    candidate = {
        k: (v + 1e-5 * rng.normal(size=v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v
        for k, v in deployed.items()
    }
    site_point = {
        "eval-site-threshold": 0.31,
        "eval-site-sensitivity": 0.96,
        "eval-site-lower": 0.9,
        "eval-site-upper": 0.99,
        "eval-site-needed": 0.0,
    }
    per_site = {
        "node-1": {"candidate": {"eval-accuracy": 0.5, "deployed-eval-accuracy": 0.6,
                                 "eval-num-examples": 10.0}},  # an agent from before
        "clinic-2": {"candidate": {"eval-accuracy": 0.7, "eval-num-examples": 300.0} | site_point},
        "clinic-3": {"candidate": {"eval-accuracy": 0.7, "eval-num-examples": 40.0}
                     | site_point | {"eval-site-threshold": -1.0, "eval-site-needed": 61.0}},
    }  # fmt: skip
    package = PackageConfig(distill_cfg, key, 2, tmp_path / "bundles", export_cfg)
    provenance = _provenance(tiny_teacher)
    d = promote(
        candidate, tiny_teacher, heldout, 0.5, per_site, package=package, provenance=provenance
    )
    assert d.promoted, d.reason
    assert d.version == 2 and d.bundle is not None and d.bundle.is_file()
    # a dip on 10 cases is reported with the site's numbers, and does not block
    site = next(s for s in d.gate["sites"] if s["site"] == "node-1")
    assert site["verdict"] == "ok" and site["cases"] == 10
    assert site["difference"] == pytest.approx(-10.0)
    assert d.gate["verdict"] == "promote" and d.provenance["cases"] == 70
    summary = verify(d.bundle, tmp_path / "keys")  # as a device checks it: every file's sha256
    assert summary.manifest.version == 2 and "provenance.json" in summary.manifest.files
    with tarfile.open(d.bundle) as tar:
        member = tar.extractfile("provenance.json")
        assert member is not None
        inside = Provenance.model_validate_json(member.read())
    assert inside == provenance
    assert [(s.site, s.rounds, s.cases) for s in inside.sites] == [
        ("clinic-1", [1, 2], 40),
        ("clinic-2", [2], 30),
    ]
    # each site's own threshold for the new weights travels in the bundle, signed with it
    assert "site_thresholds.json" in summary.manifest.files
    with tarfile.open(d.bundle) as tar:
        member = tar.extractfile("site_thresholds.json")
        assert member is not None
        sites = json.loads(member.read())["sites"]
    assert sites == {
        "clinic-2": {"ready": True, "threshold": 0.31, "sensitivity": 0.96,
                     "interval": [0.9, 0.99], "cases": 300},
        "clinic-3": {"ready": False, "needed": 61},
    }  # fmt: skip
    ckpt = tmp_path / "bundles" / "candidate-v2" / "export" / "checkpoint" / "model.json"
    exported = load_weights(ckpt)
    assert all(exported[k].shape == candidate[k].shape for k in candidate)
    assert all(np.array_equal(exported[k], candidate[k]) for k in candidate)
    report = json.loads((ckpt.parents[1] / "export.json").read_text())
    assert report["int8"]["method"] == "MinMax" and "int8" in report["precisions"]


@pytest.mark.slow
def test_keeps_the_deployed_model_when_the_candidate_is_worse(
    tiny_teacher: Path, tmp_path: Path
) -> None:
    distill_cfg = tiny_teacher.parent / "config.yaml"
    heldout = load_heldout(distill_cfg, 96)
    deployed = load_weights(tiny_teacher)
    rng = np.random.default_rng(1)
    broken = {
        k: rng.normal(size=v.shape).astype(v.dtype) if k.endswith("weight") else v
        for k, v in deployed.items()
    }
    d = promote(broken, tiny_teacher, heldout, 0.5, {}, package=None)
    assert not d.promoted and d.bundle is None
    assert d.reason.startswith("kept: not non-inferior") and heldout.site in d.reason
    assert d.gate["verdict"] == "keep" and d.gate["references"].keys() == {"deployed"}
    # an equally good candidate without a signing key is not promoted either, and says why
    same = promote(deployed, tiny_teacher, heldout, 0.5, {}, package=None)
    assert not same.promoted and "signing-key" in same.reason
