"""Index and read the public fundus dataset layouts a hospital may already hold.

Supported layouts: EyePACS (Kaggle 2015), APTOS 2019, Messidor-2, IDRiD disease grading, one
folder per grade, and a folder of DICOM files (see :mod:`models.datasets.dicom`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.datasets.arrays import UNKNOWN_GRADE

OnError = Literal["raise", "skip"]
LAYOUTS = ("eyepacs", "aptos", "messidor2", "idrid", "folders", "dicom")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_EYE_RE = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$", re.IGNORECASE)


class DatasetLayoutError(ValueError):
    """A label file or folder tree that does not follow its layout."""


class BadImageError(ValueError):
    """An image file that is missing or cannot be decoded."""


@dataclass(frozen=True)
class FundusRecord:
    """One labelled fundus image on disk; grade is 0-4, or -1 when unknown or ungradable.

    ``layout`` names the layout that indexed the record; :func:`materialise` uses it as the
    default site.
    """

    path: Path
    grade: int
    gradable: bool
    patient: str
    eye: str
    image_id: str
    layout: str = ""
    labels: tuple[int, ...] | None = None  # a multilabel task's 0/1 findings; grade is then 0/-1

    def __post_init__(self) -> None:
        if not UNKNOWN_GRADE <= self.grade <= 4:
            raise ValueError(f"{self.path}: grade {self.grade} is outside -1..4")
        if self.eye not in ("left", "right", ""):
            raise ValueError(f"{self.path}: eye {self.eye!r} must be 'left', 'right' or ''")


@dataclass(frozen=True)
class LoadedIndex:
    """The records a loader found, and the (what, why) of every row or file it skipped."""

    records: list[FundusRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class IndexCollector:
    """Gathers records, raising or recording row-level errors according to ``on_error``."""

    on_error: OnError
    records: list[FundusRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def fail(self, what: str, error: ValueError) -> None:
        """Raise ``error``, or note it against ``what`` when skipping."""
        if self.on_error == "raise":
            raise error
        self.skipped.append((what, str(error)))

    def result(self) -> LoadedIndex:
        """The collected records and skips."""
        return LoadedIndex(records=self.records, skipped=self.skipped)


def read_label_rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The data rows of a CSV label file as (line number, {stripped header: stripped value}).

    Headers are matched after stripping whitespace and columns with an empty header are
    ignored; a missing required column raises :class:`DatasetLayoutError` naming the file.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetLayoutError(f"{path}: cannot read label file ({e})") from e
    if not rows:
        raise DatasetLayoutError(f"{path}: label file is empty; expected a header row")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetLayoutError(
            f"{path}: missing column(s) {missing}; found {[h for h in header if h]}"
        )
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in row):
            continue
        cells = row + [""] * (len(header) - len(row))  # a short row reads as empty cells
        out.append((line, {h: v.strip() for h, v in zip(header, cells, strict=False) if h}))
    return out


def parse_grade(value: str, path: Path, line: int, column: str) -> int:
    """An integer DR grade 0-4 from a CSV cell, or :class:`DatasetLayoutError` naming the cell."""
    try:
        grade = int(value)
    except ValueError:
        raise DatasetLayoutError(
            f"{path}: row {line}, column {column!r}: grade {value!r} is not an integer"
        ) from None
    if not 0 <= grade <= 4:
        raise DatasetLayoutError(
            f"{path}: row {line}, column {column!r}: grade {grade} is outside 0-4"
        )
    return grade


def parse_flag(value: str, path: Path, line: int, column: str) -> bool:
    """A 0/1 flag from a CSV cell, or :class:`DatasetLayoutError` naming the cell."""
    if value not in ("0", "1"):
        raise DatasetLayoutError(f"{path}: row {line}, column {column!r}: {value!r} is not 0 or 1")
    return value == "1"


def _csv_header(path: Path) -> set[str]:
    """The stripped header names of a CSV file; empty when it cannot be read."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return {h.strip() for h in next(csv.reader(f), [])}
    except (OSError, UnicodeDecodeError):
        return set()


def split_eye(stem: str) -> tuple[str, str]:
    """(patient, eye) from an ``{id}_{left|right}`` name; otherwise (stem, '')."""
    m = _EYE_RE.match(stem)
    return (m["patient"], m["eye"].lower()) if m else (stem, "")


def _files_by_name(root: Path, suffixes: Sequence[str]) -> dict[str, list[Path]]:
    """Every file under ``root`` with one of ``suffixes``, keyed by lower-case file name."""
    found: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in suffixes and p.is_file():
            found.setdefault(p.name.lower(), []).append(p)
    return found


def _load_id_grade_csv(
    labels: Path,
    columns: tuple[str, str],
    candidates: Callable[[str], list[Path]],
    layout: str,
    on_error: OnError,
    eyes: bool,
) -> LoadedIndex:
    """Records from an (image id, grade) CSV; the first existing candidate path is used.

    With ``eyes``, patient and eye come from ``{id}_{left|right}`` ids; otherwise each image is
    its own patient.
    """
    out = IndexCollector(on_error)
    for line, row in read_label_rows(labels, columns):
        image = row[columns[0]]
        try:
            grade = parse_grade(row[columns[1]], labels, line, columns[1])
            looked = candidates(image)
            path = next((p for p in looked if p.is_file()), None)
            if path is None:
                raise BadImageError(
                    f"{labels} row {line}: image {image!r} not found; "
                    f"looked for {[str(p) for p in looked]}"
                )
        except ValueError as e:
            out.fail(f"{labels}:{line}", e)
            continue
        patient, eye = split_eye(image) if eyes else (image, "")
        out.records.append(FundusRecord(path, grade, True, patient, eye, image, layout))
    return out.result()


def load_eyepacs(root: Path, *, on_error: OnError = "raise") -> LoadedIndex:
    """EyePACS: ``trainLabels.csv`` (image,level) with ``<image>.jpeg`` in root or root/train.

    ``.jpg`` and ``.png`` are accepted too; patient and eye come from ``{id}_{left|right}``.
    """

    def candidates(image: str) -> list[Path]:
        return [d / f"{image}{s}" for d in (root, root / "train") for s in IMAGE_SUFFIXES]

    columns = ("image", "level")
    labels = root / "trainLabels.csv"
    return _load_id_grade_csv(labels, columns, candidates, "eyepacs", on_error, eyes=True)


def load_aptos(root: Path, *, on_error: OnError = "raise") -> LoadedIndex:
    """APTOS 2019: ``train.csv`` (id_code,diagnosis) with ``train_images/<id_code>.png``.

    APTOS has no patient ids, so each image counts as its own patient.
    """

    def candidates(image: str) -> list[Path]:
        return [root / "train_images" / f"{image}.png", root / f"{image}.png"]

    labels, columns = root / "train.csv", ("id_code", "diagnosis")
    return _load_id_grade_csv(labels, columns, candidates, "aptos", on_error, eyes=False)


def _messidor_csv(root: Path) -> Path:
    named = root / "messidor_data.csv"
    if named.is_file():
        return named
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise DatasetLayoutError(
            f"{root}: expected messidor_data.csv or exactly one *.csv, "
            f"found {[p.name for p in found]}"
        )
    return found[0]


def load_messidor2(root: Path, *, on_error: OnError = "raise") -> LoadedIndex:
    """Messidor-2: a CSV of image_id (with extension), adjudicated grade and gradability.

    Images are found anywhere under root by file name (the shallowest copy wins). Messidor-2
    has no patient column, so the image_id stem is used as the patient id; the two images of a
    real patient may therefore land in different splits.
    """
    labels = _messidor_csv(root)
    cols = ("image_id", "adjudicated_dr_grade", "adjudicated_gradable")
    rows = read_label_rows(labels, cols)
    files = _files_by_name(root, (*IMAGE_SUFFIXES, ".tif", ".tiff"))
    out = IndexCollector(on_error)
    for line, row in rows:
        image = row["image_id"]
        try:
            gradable = parse_flag(row["adjudicated_gradable"], labels, line, cols[2])
            grade = parse_grade(row[cols[1]], labels, line, cols[1]) if gradable else UNKNOWN_GRADE
            paths = files.get(image.lower())
            if not paths:
                raise BadImageError(f"{labels} row {line}: image {image!r} not found under {root}")
        except ValueError as e:
            out.fail(f"{labels}:{line}", e)
            continue
        path = min(paths, key=lambda p: (len(p.relative_to(root).parts), str(p)))
        stem = Path(image).stem
        out.records.append(FundusRecord(path, grade, gradable, stem, "", image, "messidor2"))
    return out.result()


def _is_idrid_csv(path: Path) -> bool:
    return {"Image name", "Retinopathy grade"} <= _csv_header(path)


def _pick_split(paths: list[Path], labels: Path, root: Path) -> list[Path]:
    """Candidates for an IDRiD image name, narrowed by the train/test word in the CSV name."""
    name = labels.name.lower()
    hint, other = ("test", "train") if "test" in name else ("train", "test")
    if hint not in name:
        return paths
    rel = {p: str(p.relative_to(root)).lower() for p in paths}
    paths = [p for p in paths if other not in rel[p]]
    preferred = [p for p in paths if hint in rel[p]]
    return preferred if len(paths) > 1 and preferred else paths


def load_idrid(root: Path, *, on_error: OnError = "raise") -> LoadedIndex:
    """IDRiD disease grading: every CSV under root with 'Image name' and 'Retinopathy grade'.

    Images ``<Image name>.jpg`` may sit anywhere under root. Training and test sets reuse names,
    so a CSV named for one set never matches an image whose path names the other. IDRiD has no
    patient ids: image_id (the image path below root, without extension) is the patient id.
    """
    label_files = [p for p in sorted(root.rglob("*.csv")) if _is_idrid_csv(p)]
    if not label_files:
        raise DatasetLayoutError(f"{root}: no CSV with columns 'Image name', 'Retinopathy grade'")
    by_stem: dict[str, list[Path]] = {}
    for paths in _files_by_name(root, IMAGE_SUFFIXES).values():
        for p in paths:
            by_stem.setdefault(p.stem.lower(), []).append(p)
    out = IndexCollector(on_error)
    for labels in label_files:
        for line, row in read_label_rows(labels, ("Image name", "Retinopathy grade")):
            name = row["Image name"]
            try:
                grade = parse_grade(row["Retinopathy grade"], labels, line, "Retinopathy grade")
                paths = _pick_split(by_stem.get(Path(name).stem.lower(), []), labels, root)
                if len(paths) != 1:
                    what = "not found" if not paths else f"ambiguous: {[str(p) for p in paths]}"
                    raise BadImageError(f"{labels} row {line}: image {name!r} {what}")
            except ValueError as e:
                out.fail(f"{labels}:{line}", e)
                continue
            image_id = paths[0].relative_to(root).with_suffix("").as_posix()
            out.records.append(FundusRecord(paths[0], grade, True, image_id, "", image_id, "idrid"))
    return out.result()


_FOLDER_GRADES = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "ungradable": UNKNOWN_GRADE}


def load_folders(root: Path, *, on_error: OnError = "raise") -> LoadedIndex:
    """One folder per grade: ``root/0`` ... ``root/4`` and optionally ``root/ungradable``.

    Patient and eye come from ``{id}_{left|right}`` file names; otherwise the stem is the patient.
    """
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in subdirs if p.name not in _FOLDER_GRADES]
    if unknown:
        raise DatasetLayoutError(
            f"{root}: unknown subfolder(s) {unknown}; expected only {list(_FOLDER_GRADES)}"
        )
    out = IndexCollector(on_error)
    out.records.extend(folder_records({sub: _FOLDER_GRADES[sub.name] for sub in subdirs}))
    return out.result()


def folder_records(
    folders: dict[Path, int], suffixes: tuple[str, ...] = IMAGE_SUFFIXES
) -> list[FundusRecord]:
    """A record per image file in each folder, labelled with that folder's grade.

    Patient and eye come from ``{id}_{left|right}`` file names; otherwise the stem is the patient.
    """
    records = []
    for sub, grade in folders.items():
        for path in sorted(sub.iterdir()):
            if path.suffix.lower() not in suffixes or not path.is_file():
                continue
            patient, eye = split_eye(path.stem)
            image_id = f"{sub.name}/{path.stem}"
            gradable = grade != UNKNOWN_GRADE
            records.append(FundusRecord(path, grade, gradable, patient, eye, image_id, "folders"))
    return records


def detect_layout(root: Path) -> str:
    """The name of the layout under ``root``: one of :data:`LAYOUTS`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: not a directory")
    if (root / "trainLabels.csv").is_file():
        return "eyepacs"
    if {"id_code", "diagnosis"} <= _csv_header(root / "train.csv"):
        return "aptos"
    messidor = {"image_id", "adjudicated_dr_grade", "adjudicated_gradable"}
    if any(messidor <= _csv_header(p) for p in root.glob("*.csv")):
        return "messidor2"
    if any(_is_idrid_csv(p) for p in root.rglob("*.csv")):
        return "idrid"
    if any((root / name).is_dir() for name in _FOLDER_GRADES):
        return "folders"
    if next(root.rglob("*.dcm"), None) is not None:
        return "dicom"
    raise DatasetLayoutError(
        f"{root}: no known dataset layout. Looked for trainLabels.csv (EyePACS), train.csv with "
        "id_code,diagnosis (APTOS 2019), a CSV with image_id,adjudicated_dr_grade,"
        "adjudicated_gradable (Messidor-2), a CSV with 'Image name','Retinopathy grade' (IDRiD), "
        "grade folders 0-4/ungradable (folders) and *.dcm files (DICOM)"
    )


def _loaders() -> dict[str, Callable[..., LoadedIndex]]:
    from models.datasets.dicom import load_dicom  # dicom imports this module: import late

    return {
        "eyepacs": load_eyepacs,
        "aptos": load_aptos,
        "messidor2": load_messidor2,
        "idrid": load_idrid,
        "folders": load_folders,
        "dicom": load_dicom,
    }


def load_index(root: Path, layout: str = "auto", on_error: OnError = "raise") -> LoadedIndex:
    """Index the dataset under ``root`` with the named layout, or the detected one for 'auto'."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: not a directory")
    name = detect_layout(root) if layout == "auto" else layout
    loaders = _loaders()
    if name not in loaders:
        raise ValueError(f"unknown layout {layout!r}; choose 'auto' or one of {list(LAYOUTS)}")
    return loaders[name](root, on_error=on_error)
