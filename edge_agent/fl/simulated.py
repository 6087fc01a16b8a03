"""Simulated sites for Flower's simulation runtime: one small device root per partition.

A simulated SuperNode has only ``partition-id`` and ``num-partitions`` in its node config. For
it the ClientApp builds, once and deterministically (seeded by the partition id), a device root
laid out like a real one: the deployed checkpoint (run config ``model``) under
``current/checkpoint/`` and clinician-reviewed synthetic cases (one of the camera profiles of
:data:`models.synth.SITES`, chosen by partition id) in an agent Store. Training and evaluation
then read it through the same device path as on a real device. Sites are cached under run
config ``sim-dir``, keyed by the model's digest and ``sim-cases``, so later runs reuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PARTITION_ID", "SimulatedSite", "ensure_site", "is_simulated"]

PARTITION_ID = "partition-id"
SITE_FILE = "site.json"
_SEED_BASE = 1000
_CHECKPOINTS = ("checkpoint/model.json", "model.json", "student.json")


def is_simulated(node_config: Mapping[str, Any]) -> bool:
    """Whether a node config is a simulated node's: no ``root``, a ``partition-id``."""
    return "root" not in node_config and PARTITION_ID in node_config


def _checkpoint(model: str) -> Path:
    """The checkpoint JSON run config ``model`` names (a ``.json`` or an export/bundle dir)."""
    if not model:
        raise ValueError("run config 'model' is empty: simulated sites deploy that checkpoint")
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".json":
        return path
    for name in _CHECKPOINTS if path.is_dir() else ():
        if (path / name).is_file():
            return path / name
    raise ValueError(f"run config 'model' = {model!r}: no checkpoint .json there")


@dataclass(frozen=True)
class SimulatedSite:
    """Which simulated site a partition is, and where its device root is cached."""

    partition: int
    checkpoint: Path
    cache: Path
    cases: int

    def __post_init__(self) -> None:
        if self.partition < 0:
            raise ValueError(f"node config partition-id = {self.partition}: must be >= 0")
        if self.cases < 1:
            raise ValueError(f"run config 'sim-cases' = {self.cases}: must be >= 1")

    @classmethod
    def from_context(
        cls, node_config: Mapping[str, Any], run_config: Mapping[str, Any]
    ) -> SimulatedSite:
        """The site of a simulated node (run config keys ``model``, ``sim-dir``, ``sim-cases``)."""
        cache = str(run_config.get("sim-dir", ""))
        if not cache:
            raise ValueError("run config 'sim-dir' is empty: simulated sites are cached there")
        return cls(
            partition=int(node_config[PARTITION_ID]),
            checkpoint=_checkpoint(str(run_config.get("model", ""))),
            cache=Path(cache).expanduser().resolve(),
            cases=int(run_config.get("sim-cases", 32)),
        )

    @property
    def profile(self) -> str:
        """The camera profile (a :data:`models.synth.SITES` name), chosen by partition id."""
        from models.synth import SITES

        names = list(SITES)
        return names[self.partition % len(names)]

    @property
    def name(self) -> str:
        """The site's name in logs: ``sim-0007-site-c``."""
        return f"sim-{self.partition:04d}-{self.profile}"

    @property
    def seed(self) -> int:
        """The synthetic cases' seed: one per partition."""
        return _SEED_BASE + self.partition

    @property
    def root(self) -> Path:
        """The cached device root: ``sim-dir/<model digest>-c<cases>/site-<partition>``."""
        digest = hashlib.sha256(self.checkpoint.read_bytes())
        digest.update(self.checkpoint.with_suffix(".safetensors").read_bytes())
        key = f"{digest.hexdigest()[:12]}-c{self.cases}"
        return self.cache / key / f"site-{self.partition:04d}"


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
    from edge_agent.install import DeviceRoot
    from edge_agent.store import Store
    from models.nets import read_meta
    from models.synth import SITES, generate

    device = DeviceRoot(path).ensure()
    slot = device.slot("a") / "checkpoint"
    slot.mkdir(parents=True)
    shutil.copy(site.checkpoint, slot / "model.json")
    shutil.copy(site.checkpoint.with_suffix(".safetensors"), slot / "model.safetensors")
    device.current.symlink_to("slots/a")
    size = read_meta(site.checkpoint).preprocess.size
    # the reviewed cases are the gradable ones; draw extra so ungradable images leave enough
    drawn = site.cases + site.cases // 2 + 4
    data = generate(SITES[site.profile], drawn, size=size, seed=site.seed)
    keep = np.flatnonzero(data.grade >= 0)[: site.cases]
    with Store(device.state_db) as store:
        for i in keep:
            case = store.record_screening(
                user="technician", model_version=None, request={"site": site.name}, result={}
            )
            store.save_case_image(case, data.images[i])
            store.record_review(case, user="clinician", grade=int(data.grade[i]))
    record = {
        "schema_version": 1,
        "partition": site.partition,
        "profile": site.profile,
        "seed": site.seed,
        "cases": len(keep),
        "model": str(site.checkpoint),
    }
    (path / SITE_FILE).write_text(json.dumps(record, indent=2))
