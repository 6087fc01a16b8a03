"""Promotion: the decision rule, and both outcomes with a tiny model, export and signed bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from server.federation.evaluation import load_heldout
from server.federation.promotion import PackageConfig, decide, promote
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


def test_decide_within_margin_and_below_it() -> None:
    deployed = {"accuracy": 70.0, "referable_sensitivity": 90.0, "referable_specificity": 80.0}
    ok, why = decide(deployed | {"accuracy": 69.8, "referable_sensitivity": 91.0}, deployed, 0.5)
    assert ok and "at least as good" in why
    refers_all = {"accuracy": 70.0, "referable_sensitivity": 100.0, "referable_specificity": 0.0}
    assert not decide(refers_all, deployed, 0.5)[0]
    ok, why = decide(deployed | {"accuracy": 72.0, "referable_sensitivity": 88.0}, deployed, 0.5)
    assert not ok and "referable_sensitivity 88.00 < deployed 90.00" in why


def test_resolve_checkpoint_from_export_dir(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "model.json").write_text("{}")
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoint" / "model.json"
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        (tmp_path / "empty").mkdir()
        resolve_checkpoint(tmp_path / "empty")


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
    per_site = {"node-1": {"deployed": {"eval-accuracy": 0.6}, "candidate": {"eval-accuracy": 0.5}}}
    package = PackageConfig(distill_cfg, key, 2, tmp_path / "bundles", export_cfg)
    d = promote(candidate, tiny_teacher, heldout, 0.5, per_site, package=package)
    assert d.promoted, d.reason
    assert d.version == 2 and d.bundle is not None and d.bundle.is_file()
    assert "node-1 0.600->0.500" in d.reason  # per-site drops are reported
    assert verify(d.bundle, tmp_path / "keys").manifest.version == 2
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
    assert "kept the deployed model" in d.reason and heldout.site in d.reason
    # an equally good candidate without a signing key is not promoted either, and says why
    same = promote(deployed, tiny_teacher, heldout, 0.5, {}, package=None)
    assert not same.promoted and "signing-key" in same.reason
