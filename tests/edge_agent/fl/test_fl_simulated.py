"""Simulated sites: a partition id becomes a deterministic, cached device root (prepared by the
server's rehearsal) that the device path reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.fl.device import load_deployed, load_reviewed
from edge_agent.fl.simulated import SITE_FILE, SimulatedSite, is_simulated, prepared_root
from models.nets import build_model, save_checkpoint
from models.preprocess import PreprocessSpec
from server.federation import ensure_site, prepare_sites


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 32 px student checkpoint."""
    import torch

    torch.manual_seed(0)
    model = build_model("resnet", {"width": 4, "depths": [1, 1, 1]})
    out = tmp_path_factory.mktemp("sim-model") / "student.json"
    return save_checkpoint(model, out, name="sim", preprocess=PreprocessSpec(size=32))


def _site(checkpoint: Path, cache: Path, partition: int, cases: int = 12) -> SimulatedSite:
    node = {"partition-id": partition, "num-partitions": 8}
    run = {"model": str(checkpoint), "sim-dir": str(cache), "sim-cases": cases}
    return SimulatedSite.from_context(node, run)


def test_only_nodes_without_a_root_are_simulated() -> None:
    assert is_simulated({"partition-id": 3, "num-partitions": 8})
    assert not is_simulated({"root": "/dev-root", "partition-id": 3})
    assert not is_simulated({"root": "/dev-root"})


def test_site_settings_name_what_is_missing(checkpoint: Path, tmp_path: Path) -> None:
    node = {"partition-id": 0}
    with pytest.raises(ValueError, match="'model' is empty"):
        SimulatedSite.from_context(node, {"model": "", "sim-dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"no checkpoint \.json"):
        SimulatedSite.from_context(node, {"model": str(tmp_path), "sim-dir": str(tmp_path)})
    with pytest.raises(ValueError, match="'sim-dir' is empty"):
        SimulatedSite.from_context(node, {"model": str(checkpoint), "sim-dir": ""})
    with pytest.raises(ValueError, match="sim-cases"):
        _site(checkpoint, tmp_path, 0, cases=0)


def test_partitions_cycle_through_the_five_camera_profiles(
    checkpoint: Path, tmp_path: Path
) -> None:
    profiles = [_site(checkpoint, tmp_path, p).profile for p in range(10)]
    assert profiles[:5] == ["site-a", "site-b", "site-c", "site-d", "site-e"]
    assert profiles[5:] == profiles[:5]
    assert len({_site(checkpoint, tmp_path, p).seed for p in range(10)}) == 10


def test_site_is_a_device_root_the_device_path_reads(checkpoint: Path, tmp_path: Path) -> None:
    site = _site(checkpoint, tmp_path / "cache", 3, cases=12)
    root = ensure_site(site)
    assert root.parent.parent == (tmp_path / "cache").resolve()
    model, meta = load_deployed(root)
    cases = load_reviewed(root, meta)
    assert len(cases) == 12
    assert cases.images.shape == (12, meta.preprocess.size, meta.preprocess.size, 3)
    assert model.state_dict().keys() == load_deployed(root)[0].state_dict().keys()
    assert not list(root.parent.glob("*.tmp-*")), "the staging directory was left behind"


def test_sites_are_deterministic_and_cached(checkpoint: Path, tmp_path: Path) -> None:
    first = ensure_site(_site(checkpoint, tmp_path / "one", 2))
    again = ensure_site(_site(checkpoint, tmp_path / "two", 2))
    other = ensure_site(_site(checkpoint, tmp_path / "one", 7))  # same profile, other seed
    _, meta = load_deployed(first)
    a, b, c = (load_reviewed(r, meta) for r in (first, again, other))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.grades, b.grades)
    assert not np.array_equal(a.images, c.images)
    stamp = (first / SITE_FILE).stat().st_mtime_ns
    assert ensure_site(_site(checkpoint, tmp_path / "one", 2)) == first
    assert (first / SITE_FILE).stat().st_mtime_ns == stamp, "a cached site was rebuilt"
    bigger = ensure_site(_site(checkpoint, tmp_path / "one", 2, cases=20))
    assert bigger != first and len(load_reviewed(bigger, meta)) == 20


def test_the_client_finds_only_prepared_sites(checkpoint: Path, tmp_path: Path) -> None:
    site = _site(checkpoint, tmp_path / "cache", 1, cases=4)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        prepared_root(site)
    roots = prepare_sites(checkpoint, tmp_path / "cache", 4, 2, log=lambda s: None)
    assert prepared_root(site) == roots[1]
