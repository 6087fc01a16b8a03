"""Promotion: the candidate becomes the next signed bundle only if it is non-inferior.

The gate (:mod:`server.federation.gate`) compares the candidate on the server's held-out set
(a site no device has) with the deployed model and with the last model a person validated, on
paired predictions, and takes the sites' own results of federated evaluation into account (site
data never leaves the site). A promoted candidate goes through the existing stages: a
checkpoint, ``server.export``, ``deploy.bundle.packing`` with the next version, with
``provenance.json`` (sites, rounds, cases) and ``site_thresholds.json`` (each site's own
threshold for the new weights, :mod:`server.federation.sitesettings`) in the bundle.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.federation.evaluation import HeldoutSet, predict_weights, score, scored_metrics
from server.federation.gate import GateResult, gate
from server.federation.provenance import ModelRef, Provenance, write_provenance
from server.federation.sitesettings import write_site_thresholds
from server.federation.weights import Weights, save_weights, weights_digest

__all__ = ["Decision", "PackageConfig", "gate_candidate", "promote"]


@dataclass(frozen=True)
class PackageConfig:
    """How to turn an approved candidate into a bundle."""

    distill_config: Path
    """The deployed model's distillation config (the export reads its data for calibration)."""
    signing_key: Path
    version: int
    out_dir: Path
    export_config: Path | None = None

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"bundle version {self.version}: versions start at 1")


@dataclass(frozen=True)
class Decision:
    """Promoted or kept, why, and what was measured (points, 0-100)."""

    promoted: bool
    reason: str
    candidate: dict[str, float]
    deployed: dict[str, float]
    per_site: dict[str, Any] = field(default_factory=dict)
    bundle: Path | None = None
    version: int | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    """The gate's record (:meth:`GateResult.to_json`, with the held-out site and scores)."""
    provenance: dict[str, Any] = field(default_factory=dict)


def _package(
    weights: Weights,
    deployed_checkpoint: Path,
    cfg: PackageConfig,
    provenance: Provenance | None,
    log: Callable[[str], None],
    per_site: Mapping[str, Any] | None = None,
) -> Path:
    from deploy.bundle import build
    from server.export import export, load_export_config

    work = cfg.out_dir / f"candidate-v{cfg.version}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    meta = json.loads(deployed_checkpoint.read_text())
    (work / "student.json").write_text(json.dumps(meta, indent=2))
    save_weights(weights, work / "student.safetensors")
    shutil.copyfile(cfg.distill_config, work / "config.yaml")
    export_cfg = load_export_config(cfg.export_config) if cfg.export_config else None
    if export_cfg is not None and export_cfg.int8_source == "qat":
        # the deployed INT8 came from quantisation-aware training of the old weights; the
        # federated weights have no QAT model of their own, so their INT8 is calibrated
        log("the deployed INT8 model was QAT-trained: calibrating the candidate's INT8 instead")
        export_cfg = export_cfg.model_copy(update={"int8_source": "calibrate"})
    log(f"exporting the candidate into {work / 'export'}")
    result = export(work, work / "export", export_cfg, log=log)
    if provenance is not None:  # inside the bundle: the signed manifest hashes it
        write_provenance(result.out, provenance)
    if per_site:  # each site's own threshold for these weights, where it proposed one
        write_site_thresholds(result.out, per_site)
    out = cfg.out_dir / f"{meta.get('name', 'model')}-v{cfg.version}.tar"
    log(f"building signed bundle v{cfg.version} at {out}")
    return build(result.out, cfg.version, cfg.signing_key, out)


def gate_candidate(
    candidate_weights: Weights,
    deployed: tuple[Path, Weights],
    heldout: HeldoutSet,
    margin: float,
    per_site_metrics: Mapping[str, Any],
    validated: ModelRef | None = None,
) -> tuple[GateResult, dict[str, dict[str, float]]]:
    """Run the gate: the candidate (built like the deployed checkpoint) against the deployed
    model and, when it is another model, the last validated one, each with its own checkpoint
    and referral threshold. Returns the result and each model's held-out scores (points)."""
    from models.nets import read_meta
    from server.federation.evaluation import check_task
    from server.federation.weights import load_weights

    checkpoint, deployed_w = deployed
    task = read_meta(checkpoint).task
    check_task(heldout, task, str(checkpoint))
    candidate = predict_weights(checkpoint, candidate_weights, heldout.arrays)
    refs = {"deployed": predict_weights(checkpoint, deployed_w, heldout.arrays)}
    about = {"deployed": f"{checkpoint} ({weights_digest(deployed_w)[:12]})"}
    if validated is not None and validated.digest != weights_digest(deployed_w):
        path = Path(validated.path)
        check_task(heldout, read_meta(path).task, str(path))
        refs["validated"] = predict_weights(path, load_weights(path), heldout.arrays)
        about["validated"] = f"{path} ({validated.digest[:12]}), by {validated.validated_by}"
    elif validated is not None:
        about["deployed"] += f"; also the last validated model, by {validated.validated_by}"
    result = gate(candidate, refs, scored_metrics(task), margin, per_site_metrics)
    result = dataclasses.replace(result, references=about)
    scores = {"candidate": score(candidate)} | {k: score(p) for k, p in refs.items()}
    return result, scores


def promote(
    candidate_weights: Weights,
    deployed_checkpoint: Path,
    heldout: HeldoutSet,
    margin: float,
    per_site_metrics: Mapping[str, Any],
    *,
    package: PackageConfig | None,
    deployed_weights: Weights | None = None,
    validated: ModelRef | None = None,
    provenance: Provenance | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Decision:
    """Gate the candidate (:func:`gate_candidate`) and promote it or keep the deployed model.

    ``heldout`` must be labelled for the deployed checkpoint's task (``ValueError``
    otherwise); ``deployed_weights`` defaults to the checkpoint's own; ``validated`` is the last
    model a person validated (None: the deployed model is). Without ``package`` (no signing key
    configured) an approved candidate is still not promoted, and the reason says so. A promoted
    bundle carries ``provenance`` as ``provenance.json``.
    """
    from server.federation.weights import load_weights

    deployed_w = (
        deployed_weights if deployed_weights is not None else load_weights(deployed_checkpoint)
    )
    result, scores = gate_candidate(
        candidate_weights, (deployed_checkpoint, deployed_w), heldout, margin, per_site_metrics,
        validated,
    )  # fmt: skip
    reason = f"{result.reason} (held-out site {heldout.site})"
    record = result.to_json() | {"heldout_site": heldout.site, "scores": scores}
    made_of = provenance.model_dump(mode="json") if provenance is not None else {}
    decision = Decision(
        False, reason, scores["candidate"], scores["deployed"], dict(per_site_metrics),
        gate=record, provenance=made_of,
    )  # fmt: skip
    if not result.passed:
        return decision
    if package is None:
        why = "; not promoted: run config 'signing-key' is empty, so no signed bundle can be built"
        return dataclasses.replace(decision, reason=reason + why)
    try:
        bundle = _package(
            candidate_weights, deployed_checkpoint, package, provenance, log, per_site_metrics
        )
    except Exception as e:  # export and bundle errors all mean: keep the deployed model
        return dataclasses.replace(
            decision, reason=f"{reason}; not promoted: packaging failed: {e}"
        )
    return dataclasses.replace(decision, promoted=True, bundle=bundle, version=package.version)
