"""Fixtures of the end-to-end federation tests: device roots with reviewed cases, real processes.

Three non-IID devices (sites with different cameras and grade prevalence), each a device root
with the tiny signed bundle installed and clinician-reviewed synthetic cases in its store.
Under ``CI=true`` a missing Flower is a failure, elsewhere the tests skip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from flower_harness import Federation, NodeSpec

SITES = ("site-a", "site-b", "site-d")
"""The devices' sites: site-d has the most different camera (blur, low resolution)."""
CASES_PER_SITE = 40


def _need_flower() -> None:
    missing = [name for name in ("flwr", "torch") if importlib.util.find_spec(name) is None]
    if not shutil.which("flower-superlink", path=str(Path(sys.executable).parent)):
        missing.append("flower-superlink")
    if missing:
        message = f"federation e2e tests need {', '.join(missing)} (pip install -e '.[fl]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def fill_device(root: Path, bundle: Path, public_key: Path, site: str, n: int, seed: int) -> Path:
    """A device root with ``bundle`` installed and ``n`` reviewed cases of ``site``."""
    from edge_agent.install import DeviceRoot, install
    from edge_agent.store import Store
    from models.synth import SITES as PROFILES
    from models.synth import generate

    device = DeviceRoot(root).ensure()
    shutil.copy(public_key, device.keys.trusted / public_key.name)
    install(device, bundle)
    size = 32
    data = generate(PROFILES[site], n + n // 2, size=size, seed=seed)
    keep = np.flatnonzero(data.grade >= 0)[:n]
    with Store(device.state_db) as store:
        for i in keep:
            case = store.record_screening(
                user="technician", model_version=1, request={"site": site}, result={}
            )
            store.save_case_image(case, data.images[i])
            store.record_review(case, user="clinician", grade=int(data.grade[i]))
    return root


@pytest.fixture(scope="session")
def fl_world(
    tiny_export: Path, tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The deployed bundle, its checkpoint and signing key, and three filled device roots.

    Keys: ``checkpoint`` (the deployed model.json), ``key`` (publisher private key),
    ``distill_config`` (held-out site for promotion), ``bundle``, and one per site.
    """
    _need_flower()
    from deploy.bundle import build_bundle
    from deploy.keys import generate_keypair

    work = tmp_path_factory.mktemp("fl-world")
    private, public = generate_keypair(work / "keys", "publisher")
    bundle = build_bundle(tiny_export, work / "model-v1.tar", 1, private)
    world = {
        "checkpoint": tiny_export / "checkpoint" / "model.json",
        "key": private,
        "bundle": bundle,
        "distill_config": tiny_teacher.parent / "config.yaml",
    }
    for i, site in enumerate(SITES):
        world[site] = fill_device(work / site, bundle, public, site, CASES_PER_SITE, seed=10 + i)
    return world


def _base_config(world: dict[str, Path], run_dir: Path, **overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "model": str(world["checkpoint"]),
        "run-dir": str(run_dir),
        "num-rounds": 1,
        "strategy": "fedavg",
        "min-train-nodes": 2,
        "min-evaluate-nodes": 2,
        "min-available-nodes": 3,
        "round-timeout": 60.0,
        "node-wait-timeout": 60.0,
        "local-epochs": 1,
        "lr": 0.01,
        "batch-size": 16,
        "min-cases": 16,
        "promote": False,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def fl_config(fl_world: dict[str, Path]) -> Callable[..., dict[str, object]]:
    """``fl_config(run_dir, **overrides)``: a run config for the tiny devices (small rounds,
    short timeouts, no promotion unless overridden)."""
    return lambda run_dir, **overrides: _base_config(fl_world, run_dir, **overrides)


@pytest.fixture
def fl_federation(
    fl_world: dict[str, Path], tmp_path: Path
) -> Iterator[tuple[Federation, dict[str, Path]]]:
    """A SuperLink and one SuperNode per site (through ``fovea-agent node``), stopped after."""
    fed = Federation(tmp_path / "federation")
    try:
        fed.start_superlink()
        for site in SITES:
            fed.start_node(NodeSpec(site, fl_world[site]))
        yield fed, fl_world
    finally:
        fed.close()
