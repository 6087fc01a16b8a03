"""Images on disk to Fovea's dataset: the ``<site>/`` shards + ``dataset.json`` training reads.

``fovea data prepare`` indexes a public layout, a folder per class, a CSV beside an image folder
or DICOM files, decodes and squares every image (a bounded process pool; JPEGs at a reduced DCT
scale), and writes one site as image shards (``<site>/images-NNNNN.npy``, memory-mappable) and
an index (``<site>/index.npz``: labels, patients, sites), which training reads through a
DataLoader without holding the images in memory. Patient ids are kept, so :func:`load_splits`
still splits by patient. Work goes into ``.prepare-<site>/`` in chunks written atomically: an
interrupted run resumes from its finished chunks, and ``<site>/`` and its ``dataset.json``
entry appear only when every image is done. Labels are the task's class indices in the grade
column (-1: ungradable), which is the DR grade for the built-in task; a multilabel task's
findings (from a CSV) go in ``labels``, N x L, with grade 0 or -1 (ungradable).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models import DR_GRADING, TaskSpec, parse_task
from models.datasets import (
    LAYOUTS,
    CsvColumns,
    DatasetLayoutError,
    FundusArrays,
    FundusRecord,
    LoadedIndex,
    ShardedImages,
    check_task_fits,
    class_folders,
    detect_layout,
    load_class_folders,
    load_csv,
    load_index,
)
from server.training.chunks import ChunkStore, DecodeOptions, decode_chunks, write_atomic
from server.training.data import DATASET_FILE
from server.training.device import Reporter

PREPARE_LAYOUTS = ("auto", *LAYOUTS, "csv")
_DR_LAYOUTS = ("eyepacs", "aptos", "messidor2", "idrid")
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_WORK_VERSION = 2  # 2: chunks are image shards


@dataclass(frozen=True)
class PrepareOptions:
    """What to prepare and how; ``site`` defaults to the layout's name."""

    source: Path
    out: Path
    size: int
    layout: str = "auto"
    site: str = ""
    task: TaskSpec = DR_GRADING
    csv: Path | None = None
    columns: CsvColumns = field(default_factory=CsvColumns)
    skip_bad: bool = False
    workers: int = 4
    chunk: int = 256

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 1024:
            raise ValueError(f"size {self.size} is outside 16-1024 pixels")
        if self.layout not in PREPARE_LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; choose one of {PREPARE_LAYOUTS}")
        if self.site and not _SITE_RE.match(self.site):
            raise ValueError(
                f"site {self.site!r} must be letters, digits, '.', '_' or '-' (it names a file)"
            )
        if self.workers < 1 or self.chunk < 1:
            raise ValueError(f"workers and chunk must be >= 1, got {self.workers}, {self.chunk}")
        if self.csv is not None and self.layout not in ("auto", "csv"):
            raise ValueError(f"a CSV (--csv) goes with layout 'csv', not {self.layout!r}")

    def decoding(self) -> DecodeOptions:
        """The decoding part of these options."""
        return DecodeOptions(self.size, self.task, self.skip_bad, self.workers, self.chunk)


@dataclass(frozen=True)
class PrepareResult:
    """What a prepare wrote: the site file, its counts, and what was skipped or reused."""

    site: str
    path: Path
    meta: Path
    layout: str
    images: int
    patients: int
    counts: dict[str, int]
    skipped: list[tuple[str, str]]
    reused: int
    """Images taken from an earlier, interrupted (or finished) run instead of decoded again."""

    @classmethod
    def of(cls, meta: Path, site: str, record: dict[str, Any], reused: int) -> PrepareResult:
        """The result for one site's ``dataset.json`` record."""
        return cls(
            site=site,
            path=meta.parent / site,
            meta=meta,
            layout=str(record["layout"]),
            images=int(record["images"]),
            patients=int(record["patients"]),
            counts=dict(record["counts"]),
            skipped=[(s["file"], s["reason"]) for s in record["skipped"]],
            reused=reused,
        )


def index_source(options: PrepareOptions) -> tuple[str, LoadedIndex]:
    """(layout, records) for the source; errors name the source and what was looked for."""
    source, task = Path(options.source), options.task
    if not source.is_dir():
        raise DatasetLayoutError(f"{source}: not a directory")
    if next(source.iterdir(), None) is None:
        raise DatasetLayoutError(f"{source}: the folder is empty; nothing to prepare")
    on_error: Literal["raise", "skip"] = "skip" if options.skip_bad else "raise"
    layout = options.layout
    if layout == "auto":
        multilabel = task.kind == "multilabel"  # findings come from a CSV only
        layout = "csv" if options.csv is not None or multilabel else _detect(source, task)
    if layout == "csv":
        labels = options.csv or source / "labels.csv"
        if not labels.is_file():
            raise DatasetLayoutError(f"{labels}: no such CSV file (give it with --csv)")
        index = load_csv(source, labels, task, columns=options.columns, on_error=on_error)
    elif layout == "folders":
        index = load_class_folders(source, task, on_error=on_error)
    else:
        if layout in _DR_LAYOUTS and task.classes != DR_GRADING.classes:
            raise DatasetLayoutError(
                f"{source}: layout {layout} holds DR grades 0-4, not the classes of task "
                f"{task.name} {list(task.classes)}; use --layout csv or folders"
            )
        check_task_fits(task, layout)
        index = load_index(source, layout, on_error=on_error)
        _check_indices(index.records, task)
    if not index.records:
        why = f" ({len(index.skipped)} skipped)" if index.skipped else ""
        raise DatasetLayoutError(f"{source}: no images to prepare with layout {layout}{why}")
    return layout, index


def _detect(source: Path, task: TaskSpec) -> str:
    """The layout under ``source``; folders named for the task's classes count as 'folders'."""
    try:
        return detect_layout(source)
    except DatasetLayoutError as e:
        try:
            class_folders(source, task)
        except DatasetLayoutError:
            raise DatasetLayoutError(
                f"{e}, nor folders named for the classes of task {task.name} "
                f"{list(task.classes)}; for a CSV beside an image folder give --csv"
            ) from None
        return "folders"


def _check_indices(records: list[FundusRecord], task: TaskSpec) -> None:
    for r in records:
        if r.grade >= task.num_classes:
            raise DatasetLayoutError(
                f"{r.path}: label {r.grade} is outside task {task.name}'s classes "
                f"0-{task.num_classes - 1} {list(task.classes)}"
            )


def _check_same_task(meta: dict[str, Any], site: str, task: TaskSpec, out: Path) -> None:
    """One dataset directory holds one task: refuse to add a site labelled for another."""
    others = set(meta.get("sites", {})) - {site}
    if others and parse_task(meta.get("task") or DR_GRADING.model_dump(mode="json")) != task:
        held = (meta.get("task") or {}).get("name", DR_GRADING.name)
        raise DatasetLayoutError(
            f"{out} holds sites {sorted(others)} labelled for task {held}, not {task.name}; "
            "prepare into another directory"
        )


def _fingerprint(options: PrepareOptions, layout: str, records: list[FundusRecord]) -> str:
    """What identifies a prepare's work: same fingerprint, same output."""
    plan = {
        "version": _WORK_VERSION,
        "source": str(Path(options.source).resolve()),
        "layout": layout,
        "size": options.size,
        "chunk": options.chunk,
        "task": options.task.model_dump(mode="json"),
        "records": [[str(r.path), r.grade, r.gradable, r.patient, *_findings(r)] for r in records],
    }
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def _findings(record: FundusRecord) -> list[list[int]]:
    """A multilabel record's findings for the fingerprint; nothing for single-label ones."""
    return [] if record.labels is None else [list(record.labels)]


def _read_meta(out: Path, site: str, size: int) -> dict[str, Any]:
    """The directory's ``dataset.json`` (empty when new); refuses a directory of another size."""
    path = out / DATASET_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetLayoutError(f"{path}: not readable JSON ({e}); move it aside") from None
    others = set(meta.get("sites", {})) - {site}
    if others and meta.get("size") not in (None, size):
        raise DatasetLayoutError(
            f"{out} holds sites {sorted(others)} at {meta.get('size')} px, not {size}; "
            "prepare at that size or into another directory"
        )
    return dict(meta)


def _record(
    options: PrepareOptions, layout: str, arrays: FundusArrays, skipped: list[tuple[str, str]]
) -> dict[str, Any]:
    """What ``dataset.json`` says about one prepared site."""
    task = options.task
    found = Counter(int(g) for g in arrays.grade)
    counts = {name: found.get(i, 0) for i, name in enumerate(task.classes)}
    if arrays.labels is not None:  # multilabel: images showing each finding
        counts = {name: int(n) for name, n in zip(task.classes, arrays.labels.sum(0), strict=True)}
    counts["ungradable"] = found.get(-1, 0)
    return {
        "source": str(Path(options.source).resolve()),
        "csv": str(options.csv.resolve()) if options.csv else None,
        "layout": layout,
        "size": options.size,
        "task": {"name": task.name, "kind": task.kind, "classes": list(task.classes)},
        "labels": (
            "labels holds the findings (N x L, 0/1); grade is 0, or -1 if ungradable"
            if arrays.labels is not None
            else "grade holds the task's class index; -1 is ungradable or unknown"
        ),
        "images": len(arrays),
        "patients": len(np.unique(arrays.patient)),
        "counts": counts,
        "skipped": [{"file": what, "reason": why} for what, why in skipped],
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _assemble(
    records: list[FundusRecord], chunks: list[dict[str, np.ndarray]], site: str, store: ChunkStore
) -> tuple[FundusArrays, list[tuple[str, str]]]:
    """One site from the decoded chunks (the images stay in the store's shards, unread), and
    the (file, why) of each skipped image."""
    kept = [records[int(i)] for c in chunks for i in c["kept"]]
    skipped = [str(s).split("\t", 1) for c in chunks for s in c["skipped"]]
    if not kept:
        raise DatasetLayoutError(f"every image was skipped as bad: {skipped[0][-1]}")
    findings = [r.labels for r in kept if r.labels is not None]
    width = len(records[0].labels or ()) if records else 0
    arrays = FundusArrays(
        images=ShardedImages([store.shard(n) for n, c in enumerate(chunks) if len(c["kept"])]),
        grade=np.array([r.grade for r in kept], dtype=np.int64),
        gradable=np.array([r.gradable for r in kept], dtype=np.bool_),
        site=np.array([site] * len(kept), dtype=np.str_),
        patient=np.array([r.patient for r in kept], dtype=np.str_),
        labels=np.array(findings, np.uint8).reshape(-1, width) if width else None,
    )
    return arrays, [(s[0], s[-1]) for s in skipped]


def _publish(
    arrays: FundusArrays, store: ChunkStore, chunks: list[dict[str, np.ndarray]], site_dir: Path
) -> None:
    """Move the chunks' shards into ``site_dir`` (replacing what was there) beside the index."""
    new = site_dir.with_name(f".{site_dir.name}.new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    names: list[str] = []
    for number, chunk in enumerate(chunks):
        if len(chunk["kept"]):
            names.append(f"images-{len(names):05d}.npy")
            store.shard(number).replace(new / names[-1])
    arrays.save_index(new, names)
    old = site_dir.with_name(f".{site_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if site_dir.exists():
        site_dir.replace(old)
    new.replace(site_dir)
    shutil.rmtree(old, ignore_errors=True)


def prepare_dataset(options: PrepareOptions, report: Reporter | None = None) -> PrepareResult:
    """Index, decode and write one site of ``options.out``; resumes an interrupted run.

    A run whose source, records and options match the site's finished prepare does nothing.
    Raises :class:`DatasetLayoutError` (layout, labels, empty source) or
    :class:`~models.datasets.BadImageError` (a bad image without ``skip_bad``), each naming the
    file or row.
    """
    layout, index = index_source(options)
    site = options.site or layout
    out = Path(options.out)
    meta = _read_meta(out, site, options.size)
    _check_same_task(meta, site, options.task, out)
    fingerprint = _fingerprint(options, layout, index.records)
    path = out / site
    done = meta.get("prepared", {}).get(site)
    if isinstance(done, dict) and done.get("fingerprint") == fingerprint and path.is_dir():
        return PrepareResult.of(out / DATASET_FILE, site, done, reused=int(done["images"]))
    store = ChunkStore(out / f".prepare-{site}", fingerprint)
    chunks, reused = decode_chunks(options.decoding(), index.records, store, report)
    try:
        arrays, skipped = _assemble(index.records, chunks, site, store)
    except DatasetLayoutError as e:
        raise DatasetLayoutError(f"{options.source}: {e}") from None
    _publish(arrays, store, chunks, path)
    (out / f"{site}.npz").unlink(missing_ok=True)  # an earlier prepare's single file
    record = _record(options, layout, arrays, index.skipped + skipped)
    meta = _read_meta(out, site, options.size)
    meta.setdefault("schema_version", 1)
    meta["task"] = options.task.model_dump(mode="json")
    meta["size"] = options.size
    meta["sites"] = {**meta.get("sites", {}), site: f"{path.name}/"}
    meta["prepared"] = {**meta.get("prepared", {}), site: {**record, "fingerprint": fingerprint}}
    write_atomic(out / DATASET_FILE, json.dumps(meta, indent=2))
    shutil.rmtree(store.dir)
    return PrepareResult.of(out / DATASET_FILE, site, record, reused)
