"""Rehearsals under Flower's simulation runtime: the simulated sites, prepared before the run.

Each partition of a rehearsal trains on a small device root laid out like a real device's: the
deployed checkpoint under ``current/checkpoint/`` and clinician-reviewed synthetic cases of one
camera profile (:data:`models.synth.SITES`, chosen by partition id, seeded by it) in an agent
Store, labelled in the model's task (:func:`synthetic_labels`). The ClientApp finds it through
``edge_agent.fl.SimulatedSite``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_agent.fl import SITE_FILE, SimulatedSite
from edge_agent.install import DeviceRoot
from edge_agent.store import Store
from models import DR_GRADING, REFERABLE_MIN_GRADE, TaskSpec
from models.nets import read_meta
from models.synth import SITES, generate


def synthetic_labels(task: TaskSpec, grades: np.ndarray) -> np.ndarray:
    """The synthetic DR grades as ``task``'s class indices: the grades themselves for a task
    with DR's classes; otherwise referable DR stands in for the task's first referral class and
    the rest for its first class that is not referred (a learnable signal, not a disease
    model). ``ValueError`` for a ``multilabel`` task (a review holds one class)."""
    if task.classes == DR_GRADING.classes:
        return grades
    if task.kind == "multilabel":
        raise ValueError(
            f"task {task.name} is multilabel: a rehearsal's reviewed cases hold one class each"
        )
    referred = task.classes.index(task.referral.classes[0])
    cleared = next(i for i, c in enumerate(task.classes) if c not in task.referral.classes)
    return np.where(grades >= REFERABLE_MIN_GRADE, referred, cleared).astype(np.int64)


def prepare_sites(
    model: Path, sim_dir: Path, cases: int, count: int, log: Callable[[str], None] = print
) -> list[Path]:
    """Device roots for partitions ``0 .. count - 1`` (built once, reused when cached)."""
    roots = []
    for partition in range(count):
        node = {"partition-id": partition}
        run = {"model": str(model), "sim-dir": str(sim_dir), "sim-cases": cases}
        roots.append(ensure_site(SimulatedSite.from_context(node, run)))
    log(f"{count} simulated sites ready under {sim_dir}")
    return roots


def ensure_site(site: SimulatedSite) -> Path:
    """The site's device root, built on first use (atomically: concurrent builders are safe)."""
    root = site.root
    if (root / SITE_FILE).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    _build(site, staging)
    try:
        staging.rename(root)
    except OSError:  # another process built it first: theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
        if not (root / SITE_FILE).is_file():
            raise
    return root


def _build(site: SimulatedSite, path: Path) -> None:
    device = DeviceRoot(path).ensure()
    slot = device.slot("a") / "checkpoint"
    slot.mkdir(parents=True)
    shutil.copy(site.checkpoint, slot / "model.json")
    shutil.copy(site.checkpoint.with_suffix(".safetensors"), slot / "model.safetensors")
    device.current.symlink_to("slots/a")
    meta = read_meta(site.checkpoint)
    # the reviewed cases are the gradable ones; draw extra so ungradable images leave enough
    drawn = site.cases + site.cases // 2 + 4
    data = generate(SITES[site.profile], drawn, size=meta.preprocess.size, seed=site.seed)
    keep = np.flatnonzero(data.grade >= 0)[: site.cases]
    labels = synthetic_labels(meta.task, data.grade)
    with Store(device.state_db) as store:
        for i in keep:
            case = store.record_screening(
                user="technician", model_version=None, request={"site": site.name}, result={}
            )
            store.save_case_image(case, data.images[i])
            store.record_review(case, user="clinician", grade=int(labels[i]))
    record = {
        "schema_version": 1,
        "partition": site.partition,
        "profile": site.profile,
        "seed": site.seed,
        "cases": len(keep),
        "model": str(site.checkpoint),
    }
    (path / SITE_FILE).write_text(json.dumps(record, indent=2))
