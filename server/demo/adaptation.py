"""What the federated rounds bought at the clinic whose camera changed: the deployed weights and
the candidate (the global weights after the last round) on further images of that camera, with
paired bootstrap 95% intervals of the differences.

The images are fresh ones of the clinic's camera (another seed than the patients its device
screened and trained on), which only a simulation has; a real clinic would see the change in
its own held-out share of reviewed cases (the rounds' per-site evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models import paired_difference, screening_metrics
from models.nets import read_meta
from models.synth import SiteProfile, generate
from server.federation import (
    DEPLOYED_FILE,
    GLOBAL_FILE,
    load_weights,
    predict_weights,
    resolve_checkpoint,
)

ADAPTATION_FILE = "adaptation.json"
IMAGES = 1000
SEED = 11  # not the device's patients (seed 7)
METRICS = ("accuracy", "referable_sensitivity", "referable_specificity")


def measure_adaptation(
    run_dir: Path, export_dir: Path, clinic: str, camera: SiteProfile, images: int = IMAGES
) -> dict[str, Any]:
    """Deployed vs candidate weights of the run in ``run_dir`` on ``images`` fresh images of
    ``camera``: each metric's two values and the paired difference with its interval (points)."""
    checkpoint = resolve_checkpoint(export_dir)
    data = generate(camera, images, size=read_meta(checkpoint).preprocess.size, seed=SEED)
    deployed = predict_weights(checkpoint, load_weights(run_dir / DEPLOYED_FILE), data)
    candidate = predict_weights(checkpoint, load_weights(run_dir / GLOBAL_FILE), data)
    before, after = screening_metrics(deployed), screening_metrics(candidate)
    change = paired_difference(candidate, deployed)
    return {
        "clinic": clinic,
        "camera": camera.name,
        "images": images,
        "metrics": {
            k: {
                "deployed": 100 * before[k].value,
                "candidate": 100 * after[k].value,
                "difference": 100 * change[k].value,
                "interval": [100 * change[k].low, 100 * change[k].high],
            }
            for k in METRICS
        },
    }


def describe_adaptation(result: dict[str, Any]) -> list[str]:
    """One line per metric, e.g. ``accuracy 61.2 -> 64.0 (+2.8, 95% CI +1.1 to +4.5)``."""
    lines = []
    for name, m in result["metrics"].items():
        lo, hi = m["interval"]
        lines.append(
            f"{name.replace('_', ' ')} {m['deployed']:.1f} -> {m['candidate']:.1f} "
            f"({m['difference']:+.1f}, 95% CI {lo:+.1f} to {hi:+.1f})"
        )
    return lines


def write_adaptation(work: Path, result: dict[str, Any]) -> Path:
    """Keep ``result`` beside the run (``work/adaptation.json``) for the summary and report."""
    path = work / ADAPTATION_FILE
    path.write_text(json.dumps(result, indent=1))
    return path


__all__ = [
    "ADAPTATION_FILE",
    "IMAGES",
    "describe_adaptation",
    "measure_adaptation",
    "write_adaptation",
]
