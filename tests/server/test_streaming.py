"""Training from sharded images on disk: read ahead by DataLoader workers, the same batches as
in memory, JPEGs prepared at a reduced DCT scale, and ``torchrun`` ranks reading disjoint rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from models import DR_GRADING, PreprocessSpec
from models.datasets import FundusArrays, FundusRecord, read_image
from models.synth import CameraOptions, camera_jpeg, generate, get_site
from server.distill import run
from server.distill.config import parse_config
from server.training import (
    DATASET_FILE,
    DataConfig,
    PrepareOptions,
    load_site,
    load_splits,
    prepare_dataset,
    read_batches,
)


def sharded_copy(src: Path, dst: Path, shard_size: int = 64) -> Path:
    """``src``'s sites (``<site>.npz``) as sharded sites in ``dst``."""
    meta = json.loads((src / DATASET_FILE).read_text())
    for site in meta["sites"]:
        load_site(src, site).save_sharded(dst / site, shard_size)
    meta["sites"] = {site: f"{site}/" for site in meta["sites"]}
    (dst / DATASET_FILE).write_text(json.dumps(meta))
    return dst


def _cfg(data: Path, out: Path, **data_options: Any) -> Any:
    return parse_config(
        {
            "teacher": None,
            "student": {"name": "resnet", "config": {"width": 4, "depths": [1, 1, 1]}},
            "data": {"dir": str(data), "test_site": "site-e", **data_options},
            "train": {"epochs": 1, "batch_size": 32, "threads": 1, "balance_power": 0.0},
            "monitor": {"enabled": False},
            "out": str(out),
            "bootstrap": 200,
        }
    )


def test_workers_read_the_same_batches_in_order(tmp_path: Path) -> None:
    arrays = generate(get_site("site-a"), 50, size=32, seed=0)
    arrays.save_sharded(tmp_path / "s", shard_size=16)
    on_disk = FundusArrays.load_sharded(tmp_path / "s")
    batches = [np.random.default_rng(i).permutation(50)[:8] for i in range(5)]
    read = list(read_batches(on_disk.images, batches, workers=2))
    assert len(read) == 5
    for (rows, images), wanted in zip(read, batches, strict=True):
        assert np.array_equal(rows, wanted)
        assert np.array_equal(images.numpy(), arrays.images[wanted])


def test_a_student_trained_from_shards_equals_one_trained_in_memory(
    tiny_data: Path, tmp_path: Path
) -> None:
    shards = sharded_copy(tiny_data, tmp_path / "shards")
    memory = run(_cfg(tiny_data, tmp_path / "memory"), log=lambda s: None)
    disk = run(_cfg(shards, tmp_path / "disk", workers=1), log=lambda s: None)
    assert disk.metrics["student"]["val"] == memory.metrics["student"]["val"]
    assert disk.metrics["student"]["test"] == memory.metrics["student"]["test"]


def _record(path: Path) -> FundusRecord:
    return FundusRecord(path, 0, True, path.stem, "left", path.stem)


def test_camera_jpegs_are_prepared_at_a_reduced_dct_scale(tmp_path: Path) -> None:
    square = generate(get_site("site-a"), 1, size=128, seed=3).images[0]
    rng = np.random.default_rng(0)
    wide = CameraOptions(width=1600, height=1200)
    small_field = CameraOptions(width=1600, height=1200, field=0.25)  # 300 px across
    for name, options in (("wide", wide), ("small", small_field)):
        (tmp_path / "src" / "0").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / "0" / f"{name}_left.jpg").write_bytes(camera_jpeg(square, rng, options))
    record = _record(tmp_path / "src" / "0" / "wide_left.jpg")
    assert read_image(record, at_least=128).shape == (150, 200, 3)  # 1/8: both sides >= 128
    assert read_image(record, at_least=200).shape == (300, 400, 3)  # 1/4
    assert read_image(record).shape == (1200, 1600, 3)
    result = prepare_dataset(
        PrepareOptions(source=tmp_path / "src", out=tmp_path / "out", size=128)
    )
    prepared = FundusArrays.load_sharded(result.path)
    spec = PreprocessSpec.for_task(DR_GRADING, 128)
    for i, name in enumerate(prepared.patient):
        full = spec.to_square(read_image(_record(tmp_path / "src" / "0" / f"{name}_left.jpg")))
        diff = np.abs(prepared.images[i].astype(int) - full.astype(int))
        assert diff.mean() < 3.0, name  # the reduced decode matches the full one
    # the small field at 1/8 would be 37 px across: it was decoded again in full, not upscaled
    small = prepared.images[list(prepared.patient).index("small")]
    assert small.shape == (128, 128, 3) and small[60:68, 60:68, 0].mean() > 50


@pytest.mark.slow
def test_torchrun_ranks_read_disjoint_rows_and_match_one_process(
    tiny_data: Path, tmp_path: Path
) -> None:
    shards = sharded_copy(tiny_data, tmp_path / "shards", shard_size=48)
    results = {}
    for world in (1, 2):
        out = tmp_path / f"world{world}"
        out.mkdir()
        cfg = _cfg(shards, out / "run", workers=1).model_dump(mode="json")
        (out / "run.yaml").write_text(yaml.safe_dump(cfg))
        script = out / "traced.py"
        script.write_text(_TRACED.format(trace=str(out / "rows")))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world)]
        cmd += ["--master_port", str(29530 + world), str(script), "distill", str(out / "run.yaml")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path.cwd())
        assert done.returncode == 0, done.stderr[-3000:]
        rows = [np.load(p) for p in sorted(out.glob("rows-*.npy"))]
        assert len(rows) == world
        results[world] = (rows, json.loads((out / "run" / "metrics.json").read_text()))
    rows, two = results[2]
    assert not set(rows[0].tolist()) & set(rows[1].tolist())  # disjoint
    union = np.concatenate(rows)
    steps = len(load_splits(DataConfig(dir=shards), 0).train) // 32
    assert len(union) == len(np.unique(union)) == steps * 32  # every row of the epoch once
    assert sorted(union.tolist()) == sorted(results[1][0][0].tolist())  # as one process read
    one = results[1][1]["student"]["test"]["accuracy"]
    acc = two["student"]["test"]["accuracy"]["value"]
    assert one["low"] <= acc <= one["high"], (acc, one)


_TRACED = """
import os, numpy as np, sys
import server.distill.trainer as trainer
real = trainer.read_batches
def traced(images, batches, workers=None):
    seen = []
    for rows, x in real(images, batches, workers):
        seen.append(np.asarray(rows))
        yield rows, x
    np.save("{trace}-" + os.environ.get("RANK", "0") + ".npy", np.concatenate(seen))
trainer.read_batches = traced
from server.cli import main
sys.argv = ["fovea", *sys.argv[1:]]
main()
"""


def test_worker_processes_prepare_what_one_process_prepares(tmp_path: Path) -> None:
    arrays = generate(get_site("site-b"), 72, size=48, seed=5)
    for i, image in enumerate(arrays.images):
        folder = tmp_path / "src" / str(max(int(arrays.grade[i]), 0))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"p{i}_left.jpg", quality=90)
    (tmp_path / "src" / "0").mkdir(exist_ok=True)
    (tmp_path / "src" / "0" / "bad_left.jpg").write_bytes(b"not a jpeg")  # named, not fatal
    done = {}
    for workers in (1, 2):
        options = PrepareOptions(
            source=tmp_path / "src", out=tmp_path / f"out{workers}", size=32, workers=workers,
            skip_bad=True, chunk=40,
        )  # fmt: skip
        result = prepare_dataset(options)
        assert result.images == 72 and len(result.skipped) == 1
        assert "bad_left.jpg" in result.skipped[0][0]
        done[workers] = FundusArrays.load_sharded(result.path)
    assert np.array_equal(done[1].pixels(), done[2].pixels())
    assert done[1].patient.tolist() == done[2].patient.tolist()
