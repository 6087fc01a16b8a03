"""Simulated sites for Flower's simulation runtime: which device root a partition trains on.

A simulated SuperNode has only ``partition-id`` and ``num-partitions`` in its node config. Its
ClientApp trains on a device root laid out like a real one, which the server's rehearsal
prepares before the run (``server.federation.prepare_sites``: the deployed checkpoint and
clinician-reviewed synthetic cases of one camera profile, seeded by the partition id). Both
sides find it through :class:`SimulatedSite`: under run config ``sim-dir``, keyed by the
model's digest and ``sim-cases``, so later runs reuse it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PARTITION_ID", "SITE_FILE", "SimulatedSite", "is_simulated", "prepared_root"]

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


def prepared_root(site: SimulatedSite) -> Path:
    """The site's device root, as the rehearsal prepared it before the run."""
    root = site.root
    if not (root / SITE_FILE).is_file():
        raise FileNotFoundError(
            f"simulated site {site.name} is not prepared at {root}: the rehearsal prepares "
            "every site before `flwr run` (server.federation.prepare_sites)"
        )
    return root
