"""Sharded images on disk: read on demand, indexed like arrays, kept on disk by subset/concat."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from models.datasets import FundusArrays, ShardedImages


def _arrays(n: int = 10, seed: int = 0) -> FundusArrays:
    rng = np.random.default_rng(seed)
    return FundusArrays(
        images=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        grade=rng.integers(-1, 5, n),
        gradable=rng.random(n) < 0.9,
        site=np.full(n, "s"),
        patient=np.array([f"p{i // 2}" for i in range(n)]),
    )


def test_a_sharded_site_reads_back_what_was_written(tmp_path: Path) -> None:
    arrays = _arrays()
    arrays.save_sharded(tmp_path / "s", shard_size=3)
    assert sorted(p.name for p in (tmp_path / "s").glob("images-*.npy")) == [
        f"images-0000{i}.npy" for i in range(4)
    ]
    back = FundusArrays.load_sharded(tmp_path / "s")
    assert back.sharded and back.images.shape == (10, 8, 8, 3) and len(back) == 10
    assert np.array_equal(back.pixels(), arrays.images)
    assert np.array_equal(back.images[4], arrays.images[4])  # one row, across a shard edge
    assert np.array_equal(back.images[-1], arrays.images[-1])
    rows = np.array([9, 0, 5, 5, 2])
    assert np.array_equal(back.images[rows], arrays.images[rows])
    mask = arrays.grade > 1
    assert np.array_equal(back.images[mask], arrays.images[mask])
    assert np.array_equal(back.images[2:7], arrays.images[2:7])
    with pytest.raises(IndexError, match="outside 10 images"):
        back.images[10]
    # each shard is a plain .npy file: numpy maps it too
    assert np.array_equal(
        np.load(tmp_path / "s" / "images-00001.npy", mmap_mode="r"), arrays.images[3:6]
    )


def test_subset_and_concat_stay_on_disk_and_pickle_without_open_files(tmp_path: Path) -> None:
    a, b = _arrays(7, seed=1), _arrays(5, seed=2)
    a.save_sharded(tmp_path / "a", shard_size=4)
    b.save_sharded(tmp_path / "b", shard_size=4)
    da, db = FundusArrays.load_sharded(tmp_path / "a"), FundusArrays.load_sharded(tmp_path / "b")
    keep = np.array([6, 1, 3])
    part = da.subset(keep)
    assert part.sharded and np.array_equal(part.pixels(), a.images[keep])
    both = FundusArrays.concat([part, db])
    assert both.sharded and len(both) == 8
    assert np.array_equal(both.pixels(), np.concatenate([a.images[keep], b.images]))
    assert both.patient.tolist() == [*a.patient[keep], *b.patient]
    clone = pickle.loads(pickle.dumps(both.images))  # what a DataLoader worker receives
    assert isinstance(clone, ShardedImages) and np.array_equal(clone[7], b.images[4])
    with pytest.raises(ValueError, match="on disk with images in memory"):
        FundusArrays.concat([part, b])


def test_a_truncated_shard_or_a_wrong_index_is_named(tmp_path: Path) -> None:
    _arrays().save_sharded(tmp_path / "s", shard_size=5)
    shard = tmp_path / "s" / "images-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    back = FundusArrays.load_sharded(tmp_path / "s")
    assert np.array_equal(back.images[:5], _arrays().images[:5])  # the whole shard still reads
    with pytest.raises(OSError, match=r"images-00001\.npy: short read"):
        back.images[9]
    _arrays(4).save_index(tmp_path / "s", ["images-00000.npy"])  # 4 rows, 5 images
    with pytest.raises(ValueError, match="4 rows but the shards hold 5 images"):
        FundusArrays.load_sharded(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no sharded dataset"):
        FundusArrays.load_sharded(tmp_path / "elsewhere")


def test_fitting_sample_reads_a_bounded_even_sample(tmp_path: Path) -> None:
    arrays = _arrays(10)
    assert np.array_equal(arrays.fitting_sample(), arrays.images)  # small: all of it
    arrays.save_sharded(tmp_path / "s", shard_size=4)
    sample = FundusArrays.load_sharded(tmp_path / "s").fitting_sample(pixels=3 * 64)
    assert np.array_equal(sample, arrays.images[[0, 4, 9]])
