"""Promotion: the candidate becomes the next signed bundle only if it is at least as good.

Compared on the server's held-out set (a site no device has) within a margin in points; per-site
results of federated evaluation are recorded beside the decision (site data never leaves the
site). A promoted candidate goes through the existing stages: a checkpoint, ``server.export``,
``deploy.bundle.packing`` with the next version.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.federation.evaluation import HeldoutSet, evaluate_weights
from server.federation.weights import Weights, save_weights

__all__ = ["Decision", "PackageConfig", "decide", "promote"]

COMPARED = ("accuracy", "mean_auc", "referable_sensitivity", "referable_specificity")


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


def decide(
    candidate: Mapping[str, float], deployed: Mapping[str, float], margin: float
) -> tuple[bool, str]:
    """Whether the candidate is within ``margin`` points of the deployed model on every compared
    metric both were scored on (accuracy, or the mean AUC of a multilabel task, and the
    referral rule's sensitivity and specificity: a model that refers everyone must not pass on
    sensitivity alone), and a sentence saying so with the numbers."""
    keys = [k for k in COMPARED if k in candidate and k in deployed]
    if not keys:
        return False, "kept the deployed model: no compared metric was measured on both models"
    worse = [
        f"{k} {candidate[k]:.2f} < deployed {deployed[k]:.2f} - {margin:g}"
        for k in keys
        if candidate[k] < deployed[k] - margin
    ]
    summary = ", ".join(f"{k} {candidate[k]:.2f} vs {deployed[k]:.2f}" for k in keys)
    if worse:
        return False, "kept the deployed model: candidate is worse on the held-out site (" + (
            "; ".join(worse) + ")"
        )
    return True, f"candidate is at least as good on the held-out site within {margin:g}: {summary}"


def _site_drops(per_site: Mapping[str, Any]) -> list[str]:
    drops = []
    for site, m in per_site.items():
        before, after = m.get("deployed", {}), m.get("candidate", {})
        key = "eval-accuracy"
        if key in before and key in after and after[key] < before[key]:
            drops.append(f"{site} {before[key]:.3f}->{after[key]:.3f}")
    return drops


def _package(
    weights: Weights, deployed_checkpoint: Path, cfg: PackageConfig, log: Callable[[str], None]
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
    out = cfg.out_dir / f"{meta.get('name', 'model')}-v{cfg.version}.tar"
    log(f"building signed bundle v{cfg.version} at {out}")
    return build(result.out, cfg.version, cfg.signing_key, out)


def promote(
    candidate_weights: Weights,
    deployed_checkpoint: Path,
    heldout: HeldoutSet,
    margin: float,
    per_site_metrics: Mapping[str, Any],
    *,
    package: PackageConfig | None,
    deployed_weights: Weights | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Decision:
    """Evaluate candidate and deployed model on ``heldout`` and promote the candidate or refuse.

    Both are built for the deployed checkpoint's task and scored by its metrics; the promoted
    bundle carries the same task (its checkpoint JSON is the deployed one's). ``heldout`` must be
    labelled for that task (``ValueError`` otherwise). ``deployed_weights`` defaults to the
    checkpoint's own. Without ``package`` (no signing key configured) an approved candidate is
    still not promoted, and the reason says so.
    """
    from models.nets import read_meta
    from server.federation.evaluation import check_task
    from server.federation.weights import load_weights

    check_task(heldout, read_meta(deployed_checkpoint).task, str(deployed_checkpoint))
    deployed_w = (
        deployed_weights if deployed_weights is not None else load_weights(deployed_checkpoint)
    )
    cand = evaluate_weights(deployed_checkpoint, candidate_weights, heldout.arrays)
    dep = evaluate_weights(deployed_checkpoint, deployed_w, heldout.arrays)
    ok, reason = decide(cand, dep, margin)
    reason = f"{reason} ({heldout.site}, {len(heldout.arrays)} images)"
    drops = _site_drops(per_site_metrics)
    if drops:
        reason += "; federated evaluation dropped at " + ", ".join(drops)
    sites = dict(per_site_metrics)
    if not ok:
        return Decision(False, reason, cand, dep, sites)
    if package is None:
        return Decision(
            False,
            reason + "; not promoted: run config 'signing-key' is empty, so no signed bundle "
            "can be built",
            cand,
            dep,
            sites,
        )
    try:
        bundle = _package(candidate_weights, deployed_checkpoint, package, log)
    except Exception as e:  # export and bundle errors all mean: keep the deployed model
        return Decision(False, f"{reason}; not promoted: packaging failed: {e}", cand, dep, sites)
    return Decision(True, reason, cand, dep, sites, bundle, package.version)
