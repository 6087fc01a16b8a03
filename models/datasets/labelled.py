"""Images labelled in a task's own terms: a CSV beside an image folder, or a folder per class.

Labels are class names of a :class:`~models.TaskSpec` (mapped with ``TaskSpec.class_index``),
class indices, or ``ungradable``. :class:`~models.datasets.FundusArrays` keeps one integer label
per image in -1..4, so a single-label task of at most five classes fits: its class index is
stored where DR grading stores the grade. A ``multilabel`` task comes from a CSV only: its label
cell lists the findings present, separated by ``;`` (empty or ``none``: no finding). A label
outside the task is always an error naming the value and the row or folder; it is never skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from models.datasets.arrays import UNKNOWN_GRADE
from models.datasets.public import (
    IMAGE_SUFFIXES,
    BadImageError,
    DatasetLayoutError,
    FundusRecord,
    IndexCollector,
    LoadedIndex,
    OnError,
    folder_records,
    read_label_rows,
    split_eye,
)
from models.task import TaskSpec

UNGRADABLE = "ungradable"
LABELLED_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm")
_EYES = {"left": "left", "l": "left", "os": "left", "right": "right", "r": "right", "od": "right"}


@dataclass(frozen=True)
class CsvColumns:
    """The CSV's column names; ``patient`` and ``eye`` may be absent from the file."""

    image: str = "image"
    label: str = "label"
    patient: str = "patient"
    eye: str = "eye"

    def __post_init__(self) -> None:
        names = [self.image, self.label, self.patient, self.eye]
        if any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise ValueError(f"CSV column names must be distinct and non-empty, got {names}")


def check_task_fits(task: TaskSpec, layout: str = "folders") -> None:
    """Raise :class:`DatasetLayoutError` when ``layout`` cannot hold the task's labels: a
    ``multilabel`` task's findings come from a CSV only."""
    if task.kind == "multilabel" and layout != "csv":
        raise DatasetLayoutError(
            f"task {task.name} is multilabel; layout {layout} gives one class per image, so "
            "give the findings in a CSV (--layout csv): one row per image, its findings "
            "separated by ';'"
        )


def finding_labels(value: str, task: TaskSpec, where: str) -> tuple[int, ...] | None:
    """A multilabel cell as 0/1 per label of ``task``: names separated by ``;`` (empty or
    ``none``: no finding), matched exactly or case-insensitively; None for ``ungradable``."""
    text = value.strip()
    if text.lower() == UNGRADABLE:
        return None
    found = [0] * task.num_classes
    names = [n.strip() for n in text.split(";") if n.strip()]
    if [n.lower() for n in names] == ["none"]:
        return tuple(found)
    for name in names:
        hits = [i for i, c in enumerate(task.classes) if c == name]
        hits = hits or [i for i, c in enumerate(task.classes) if c.lower() == name.lower()]
        if len(hits) != 1:
            raise DatasetLayoutError(
                f"{where}: finding {name!r} is not a label of task {task.name}; expected names "
                f"from {list(task.classes)} separated by ';', 'none', or {UNGRADABLE!r}"
            )
        found[hits[0]] = 1
    return tuple(found)


def label_index(value: str, task: TaskSpec, where: str) -> int:
    """The class index of a label: a class name, a class index, or ``ungradable`` (-1).

    Names match exactly, or case-insensitively when that is unambiguous.
    """
    text = value.strip()
    if text.lower() == UNGRADABLE:
        return UNKNOWN_GRADE
    if re.fullmatch(r"[+-]?\d+", text):
        index = int(text)
        if 0 <= index < task.num_classes:
            return index
    elif text in task.classes:
        return int(task.class_index([text])[0])
    else:
        folded = [c for c in task.classes if c.lower() == text.lower()]
        if len(folded) == 1:
            return int(task.class_index(folded)[0])
    raise DatasetLayoutError(
        f"{where}: label {text!r} is not a class of task {task.name}; expected one of "
        f"{list(task.classes)}, a class index 0-{task.num_classes - 1}, or {UNGRADABLE!r}"
    )


def _eye(value: str, where: str) -> str:
    eye = _EYES.get(value.strip().lower())
    if eye is None:
        raise DatasetLayoutError(
            f"{where}: eye {value!r} is not one of left/right (L/R, OS/OD also accepted)"
        )
    return eye


def _find_image(root: Path, name: str) -> tuple[Path | None, list[Path]]:
    """The image a CSV cell names (as given, or with an image suffix added), and where we looked."""
    given = root / name
    looked = [given] + [given.with_name(given.name + s) for s in LABELLED_SUFFIXES]
    if given.suffix.lower() in LABELLED_SUFFIXES:
        looked = [given]
    return next((p for p in looked if p.is_file()), None), looked


def _without_suffix(name: str) -> str:
    path = Path(name)
    return (path.with_suffix("") if path.suffix.lower() in LABELLED_SUFFIXES else path).as_posix()


def load_csv(
    root: Path,
    labels: Path,
    task: TaskSpec,
    *,
    columns: CsvColumns | None = None,
    on_error: OnError = "raise",
) -> LoadedIndex:
    """Records from a CSV of (image, label[, patient][, eye]) with the images under ``root``.

    The image cell is a path below ``root``, with or without its suffix. Without a patient
    column (or with an empty cell) the patient and eye come from ``{id}_{left|right}`` names,
    else the image name is the patient. A missing image is raised or, with ``on_error="skip"``,
    skipped and noted; a bad label or eye is always raised.
    """
    columns = columns or CsvColumns()
    check_task_fits(task, "csv")
    out = IndexCollector(on_error)
    for line, row in read_label_rows(labels, (columns.image, columns.label)):
        where = f"{labels}: row {line}"
        image = row[columns.image]
        if not image:
            raise DatasetLayoutError(f"{where}: column {columns.image!r} is empty")
        cell, at = row[columns.label], f"{where}, column {columns.label!r}"
        findings = finding_labels(cell, task, at) if task.kind == "multilabel" else None
        if task.kind == "multilabel":
            grade = UNKNOWN_GRADE if findings is None else 0
            findings = findings or (0,) * task.num_classes
        else:
            grade = label_index(cell, task, at)
        path, looked = _find_image(root, image)
        if path is None:
            out.fail(
                f"{labels}:{line}",
                BadImageError(f"{where}: image {image!r} not found; looked for {looked[0]}"),
            )
            continue
        image_id = _without_suffix(image)
        patient, eye = split_eye(image_id)
        patient = row.get(columns.patient) or patient
        if row.get(columns.eye):
            eye = _eye(row[columns.eye], f"{where}, column {columns.eye!r}")
        gradable = grade != UNKNOWN_GRADE
        record = FundusRecord(path, grade, gradable, patient, eye, image_id, "csv", findings)
        out.records.append(record)
    return out.result()


def class_folders(root: Path, task: TaskSpec) -> dict[Path, int]:
    """{subfolder: class index} when every subfolder of ``root`` names a class of ``task``.

    Folders are named by class name, class index or ``ungradable``; any other subfolder is a
    :class:`DatasetLayoutError` naming it.
    """
    check_task_fits(task)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DatasetLayoutError(f"{root}: no class folders")
    return {sub: label_index(sub.name, task, f"{root}: folder {sub.name!r}") for sub in subdirs}


def load_class_folders(root: Path, task: TaskSpec, *, on_error: OnError = "raise") -> LoadedIndex:
    """One folder per class of ``task`` (see :func:`class_folders`), images directly inside.

    Patient and eye come from ``{id}_{left|right}`` file names; otherwise the stem is the
    patient. ``on_error`` is accepted for a uniform loader signature: a bad image file is found
    when it is decoded, not here.
    """
    out = IndexCollector(on_error)
    out.records.extend(folder_records(class_folders(root, task), LABELLED_SUFFIXES))
    return out.result()
