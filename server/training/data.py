"""Datasets on disk for training: the directory ``fovea data synth`` writes, split by patient."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import DR_GRADING, PreprocessSpec, TaskSpec, parse_task
from models.datasets import INDEX_FILE, FundusArrays
from models.synth import SITES, generate, get_site
from server.training.config import DataConfig

DATASET_FILE = "dataset.json"


def synthesise(
    out: Path,
    *,
    sites: list[str],
    per_site: int,
    size: int,
    seed: int,
    progress: bool = False,
) -> dict[str, Path]:
    """Write one ``<site>.npz`` per site and a ``dataset.json`` describing them.

    Sites that ``fovea data prepare`` wrote into ``out`` before stay listed; they must have
    been prepared at the same ``size``.
    """
    out.mkdir(parents=True, exist_ok=True)
    prepared = _prepared_sites(out, size, exclude=set(sites))
    written: dict[str, Path] = {}
    for name in sites:
        site = get_site(name)
        written[name] = generate(site, per_site, size=size, seed=seed).save(out / f"{name}.npz")
        if progress:
            print(f"  {name}: {per_site} images at {size}x{size} -> {written[name]}")
    meta = {
        "schema_version": 1,
        "size": size,
        "seed": seed,
        "per_site": per_site,
        "sites": {**_site_entries(out, prepared), **{n: p.name for n, p in written.items()}},
    }
    if prepared:
        meta["prepared"] = prepared
    (out / DATASET_FILE).write_text(json.dumps(meta, indent=2))
    return written


def _site_entries(out: Path, names: dict[str, Any]) -> dict[str, str]:
    """``dataset.json``'s entries for the prepared sites ``names`` (a shard directory, or the
    single file an earlier prepare wrote)."""
    return {n: f"{n}/" if (out / n / INDEX_FILE).is_file() else f"{n}.npz" for n in names}


def _prepared_sites(out: Path, size: int, exclude: set[str]) -> dict[str, Any]:
    """The prepared sites already recorded in ``out/dataset.json`` (all at ``size``)."""
    path = out / DATASET_FILE
    if not path.is_file():
        return {}
    meta = json.loads(path.read_text())
    prepared = {k: v for k, v in (meta.get("prepared") or {}).items() if k not in exclude}
    if prepared and read_task(out) != DR_GRADING:
        raise ValueError(
            f"{out} holds sites {sorted(prepared)} prepared for task {read_task(out).name}; "
            "synthetic images are DR grading: synthesise into another directory"
        )
    if prepared and meta.get("size") != size:
        raise ValueError(
            f"{out} holds prepared sites {sorted(prepared)} at {meta.get('size')} px; synthesise "
            f"at that size or into another directory"
        )
    return prepared


def read_task(directory: Path) -> TaskSpec:
    """The task a dataset directory's labels are for (``dataset.json``; DR grading when it
    names none, as synthetic data and datasets written before task specs)."""
    path = directory / DATASET_FILE
    if not path.is_file():
        return DR_GRADING
    task = json.loads(path.read_text()).get("task")
    return DR_GRADING if task is None else parse_task(task, f"{path}: task")


def dataset_matches(out: Path, *, sites: list[str], per_site: int, size: int, seed: int) -> bool:
    """Whether ``out`` already holds exactly this synthetic dataset."""
    path = out / DATASET_FILE
    if not path.is_file():
        return False
    meta = json.loads(path.read_text())
    return (
        meta.get("size") == size
        and meta.get("seed") == seed
        and meta.get("per_site") == per_site
        and all((out / f"{s}.npz").is_file() for s in sites)
        and set(sites) <= set(meta.get("sites", {}))
    )


def load_site(directory: Path, site: str) -> FundusArrays:
    """One site's arrays from a dataset directory, with a clear error when it is missing: a
    prepared site's shards (``<site>/``, images left on disk) or a ``<site>.npz`` in memory."""
    if (directory / site / INDEX_FILE).is_file():
        return FundusArrays.load_sharded(directory / site)
    path = directory / f"{site}.npz"
    if not path.is_file():
        have = sorted(p.stem for p in directory.glob("*.npz")) if directory.is_dir() else []
        have += sorted(p.parent.name for p in directory.glob(f"*/{INDEX_FILE}"))
        hint = f" (it has: {', '.join(have)})" if have else ""
        raise FileNotFoundError(
            f"no data for site {site!r} at {path}{hint}; create it with "
            f"`fovea data synth --out {directory}` (built-in sites: {', '.join(SITES)})"
        )
    return FundusArrays.load(path)


def split_patients(
    arrays: FundusArrays, fraction: float, seed: int
) -> tuple[FundusArrays, FundusArrays]:
    """(rest, held-out share) with every patient's images on one side."""
    patients = np.unique(arrays.patient)
    rng = np.random.default_rng(seed)
    held = set(
        rng.choice(patients, size=max(round(len(patients) * fraction), 1), replace=False).tolist()
    )
    mask = np.array([p in held for p in arrays.patient])
    return arrays.subset(~mask), arrays.subset(mask)


@dataclass(frozen=True)
class Splits:
    """Training, validation (same sites, other patients) and test (an unseen site)."""

    train: FundusArrays
    val: FundusArrays
    test: FundusArrays | None
    task: TaskSpec = DR_GRADING
    """The task the labels are for."""


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Read the configured sites and split them by patient."""
    if not cfg.dir.is_dir():
        raise FileNotFoundError(
            f"data directory {cfg.dir} does not exist; create it with "
            f"`fovea data synth --out {cfg.dir}`"
        )
    if cfg.test_site and cfg.test_site in cfg.train_sites:
        raise ValueError(f"data.test_site {cfg.test_site!r} is also a training site")
    trains, vals = [], []
    for site in cfg.train_sites:
        train, val = split_patients(load_site(cfg.dir, site), cfg.val_fraction, seed)
        trains.append(train)
        vals.append(val)
    train = FundusArrays.concat(trains)
    if cfg.limit and len(train) > cfg.limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(train), cfg.limit, replace=False))
        train = train.subset(keep)
    test = load_site(cfg.dir, cfg.test_site) if cfg.test_site else None
    if test is not None and cfg.test_limit and len(test) > cfg.test_limit:
        test = test.subset(slice(0, cfg.test_limit))
    task = read_task(cfg.dir)
    for arrays, what in ((train, "training"), (test, "test")):
        if arrays is not None:
            _check_fits(arrays, task, f"{cfg.dir} ({what})")
    return Splits(train=train, val=FundusArrays.concat(vals), test=test, task=task)


def _check_fits(arrays: FundusArrays, task: TaskSpec, where: str) -> None:
    """Refuse images or labels the task does not take, naming the directory."""
    try:
        task.check_labels(arrays.targets(task))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if arrays.images.shape[-1] != task.input.channels:
        raise ValueError(
            f"{where}: images have {arrays.images.shape[-1]} channels, task {task.name} takes "
            f"{task.input.channels}; prepare the data with this task"
        )


@dataclass(frozen=True)
class TrainingData:
    """What a trainer learns from: images, their preprocessing, and the validation split."""

    spec: PreprocessSpec
    train: FundusArrays
    val: FundusArrays
