"""Clinical-scale data (issue 16): camera JPEGs prepared into shards, one distillation epoch
streamed from them, beside the single-process decode limit and today's in-memory loader.

    python -m benchmarks.data_scale            # 5,000 camera JPEGs at 384 px; ~20 min on 2 cores
                                               # (+ ~12 min the first time to render the JPEGs)
    python -m benchmarks.data_scale --quick    # 48 images at 1200 x 900, 96 px (smoke)

In one run:
1. ``N`` camera-size JPEGs (3000 x 2250, ``models.synth.write_camera_set``; cached under
   ``.fovea/bench/data_scale/``).
2. The single-process decode limit: one thread decoding and squaring a sample of those files,
   at the reduced DCT scale ``fovea data prepare`` uses, and in full for reference (images/s).
3. ``fovea data prepare --size S`` as a user runs it (a subprocess, default workers): images/s
   against that limit.
4. One distillation epoch (``fovea distill``, random-weight Fovea ResNets as teacher and
   student: the loader is measured, not the models) over the prepared shards, and the same
   epoch with the site in memory as Fovea loaded data before (``<site>.npz``), each sampled for
   the summed PSS of its whole process tree (DataLoader workers included): peak MiB side by side
   against the 2 GiB budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.memory import MemorySampler
from benchmarks.report import write

CACHE = Path(".fovea/bench/data_scale")
BUDGET_MIB = 2048
SITE = "camera"


def _camera_set(n: int, quick: bool) -> Path:
    from models.synth import CameraOptions, write_camera_set

    options = CameraOptions(width=1200, height=900) if quick else CameraOptions()
    root = CACHE / (f"camera-quick-{n}" if quick else f"camera-{n}")
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r  rendering camera JPEGs {done}/{total}", end="", flush=True)

    made = write_camera_set(root, n, options=options, progress=progress)
    print(f"\r  {made.images} camera JPEGs in {root} ({time.perf_counter() - t0:.0f} s)")
    return root


def _decode_limit(root: Path, size: int, sample: int) -> dict[str, float]:
    """Images/s of one thread decoding and squaring files, reduced (DCT) and in full."""
    from models import DR_GRADING, PreprocessSpec
    from models.datasets import FundusRecord, read_image

    spec = PreprocessSpec.for_task(DR_GRADING, size)
    files = sorted((root / "images").glob("*.jpg"))[:sample]
    records = [FundusRecord(p, 0, True, p.stem, "left", p.stem) for p in files]
    rates = {}
    for name, at_least in (("reduced", size), ("full", None)):
        t0 = time.perf_counter()
        for r in records:
            spec.to_square(read_image(r, at_least=at_least))
        rates[name] = len(records) / (time.perf_counter() - t0)
    return rates


def _fovea(*args: str) -> list[str]:
    return [sys.executable, "-m", "server", *args]


def _prepare(root: Path, out: Path, size: int) -> dict[str, float]:
    """Time ``fovea data prepare`` from scratch (a subprocess, default workers)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = _fovea("data", "prepare", str(root), "--out", str(out), "--size", str(size))
    cmd += ["--layout", "csv", "--site", SITE]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"fovea data prepare failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    images = json.loads((out / "dataset.json").read_text())["prepared"][SITE]["images"]
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds}


def _teacher(path: Path, size: int) -> Path:
    import torch

    from models import PreprocessSpec
    from models.nets import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet", {"width": 8, "depths": [1, 1, 1]})
    return save_checkpoint(model, path, name="scale-teacher", preprocess=PreprocessSpec(size=size))


def _epoch(data: Path, teacher: Path, out: Path, workers: int | None) -> dict[str, Any]:
    """One distillation epoch in a subprocess, sampled for its process tree's PSS."""
    import yaml

    reading: dict[str, Any] = {"dir": str(data.resolve()), "train_sites": [SITE]}
    reading |= {"test_site": None} if workers is None else {"test_site": None, "workers": workers}
    cfg = {
        "teacher": str(teacher.resolve()),
        "student": {"name": "resnet", "config": {"width": 4, "depths": [1, 1, 1]}},
        "data": reading,
        "train": {"epochs": 1, "batch_size": 32, "cache_teacher": False},
        "monitor": {"enabled": False},
        "bootstrap": 0,
        "out": str(out.resolve()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.yaml").write_text(yaml.safe_dump(cfg))
    cmd = _fovea("distill", str(out.parent / f"{out.name}.yaml"), "--out", str(out))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    sampler = MemorySampler([proc.pid], interval=0.25)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    sampler.stop()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"fovea distill failed:\n{output[-3000:]}")
    return {**sampler.peak(), "seconds": round(time.perf_counter() - t0, 1)}


def _in_memory_copy(prepared: Path, out: Path) -> Path:
    """The prepared site as one ``<site>.npz`` loaded whole, the way Fovea read data before."""
    from models.datasets import FundusArrays

    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((prepared / "dataset.json").read_text())
    site = FundusArrays.load_sharded(prepared / SITE)
    FundusArrays(
        images=site.pixels(),
        grade=site.grade,
        gradable=site.gradable,
        site=site.site,
        patient=site.patient,
    ).save(out / f"{SITE}.npz")
    meta["sites"] = {SITE: f"{SITE}.npz"}
    (out / "dataset.json").write_text(json.dumps(meta))
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and write ``results/data_scale.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="camera JPEGs to prepare")
    parser.add_argument("--size", type=int, default=384, help="training size in pixels")
    parser.add_argument("--sample", type=int, default=60, help="files timed in one thread")
    parser.add_argument("--quick", action="store_true", help="smoke size")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.size, args.sample = 48, 96, 12
    root = _camera_set(args.n, args.quick)
    limit = _decode_limit(root, args.size, args.sample)
    print(f"  one thread: {limit['reduced']:.1f} img/s reduced, {limit['full']:.1f} in full")
    work = CACHE / ("quick" if args.quick else f"run-{args.n}-{args.size}")
    prepared = _prepare(root, work / "shards", args.size)
    print(f"  fovea data prepare: {prepared['images_per_s']:.1f} img/s")
    teacher = _teacher(work / "teacher", args.size)
    streamed = _epoch(work / "shards", teacher, work / "epoch-shards", None)
    print(f"  epoch from shards: peak PSS {streamed['peak_pss_mib']:.0f} MiB")
    memory_dir = _in_memory_copy(work / "shards", work / "memory")
    in_memory = _epoch(memory_dir, teacher, work / "epoch-memory", None)
    print(f"  epoch in memory:   peak PSS {in_memory['peak_pss_mib']:.0f} MiB")
    pixels = prepared["images"] * args.size * args.size * 3 / 2**20
    table = [
        ["measure", "value", "against", "ratio / target"],
        ["one-thread decode (DCT-reduced), img/s", f"{limit['reduced']:.1f}",
         f"in full: {limit['full']:.1f}", f"{limit['reduced'] / limit['full']:.1f}x"],
        ["`fovea data prepare`, img/s", f"{prepared['images_per_s']:.1f}",
         f"one-thread limit: {limit['reduced']:.1f}",
         f"{prepared['images_per_s'] / limit['reduced']:.2f}x"],
        ["distillation epoch from shards, peak PSS MiB", f"{streamed['peak_pss_mib']:.0f}",
         f"in memory: {in_memory['peak_pss_mib']:.0f}",
         f"budget {BUDGET_MIB}: {'met' if streamed['peak_pss_mib'] < BUDGET_MIB else 'MISSED'}"],
        ["epoch time, s", f"{streamed['seconds']:.0f}", f"in memory: {in_memory['seconds']:.0f}",
         f"{streamed['seconds'] / in_memory['seconds']:.2f}x"],
    ]  # fmt: skip
    payload = {
        "config": {"images": args.n, "size": args.size, "camera": "quick" if args.quick else
                   "3000x2250", "uint8_pixels_mib": round(pixels)},
        "decode_limit": limit,
        "prepare": prepared,
        "epoch_sharded": streamed,
        "epoch_in_memory": in_memory,
        "budget_mib": BUDGET_MIB,
        "met": bool(streamed["peak_pss_mib"] < BUDGET_MIB),
    }  # fmt: skip
    write("data_scale_quick" if args.quick else "data_scale", payload, table)


if __name__ == "__main__":
    main()
