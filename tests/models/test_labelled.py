"""Tests for labels in a task's terms: a CSV beside an image folder, and a folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import DR_GRADING, load_task
from models.datasets import (
    BadImageError,
    CsvColumns,
    DatasetLayoutError,
    FundusArrays,
    check_task_fits,
    label_index,
    load_class_folders,
    load_csv,
)

TASKS = Path(__file__).resolve().parents[2] / "configs" / "tasks"
GLAUCOMA = load_task(TASKS / "glaucoma-referral.yaml")
FINDINGS = load_task(TASKS / "fundus-findings.yaml")


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((24, 24, 3), np.uint8)
    img[4:20, 4:20] = (190, 90, 40)
    Image.fromarray(img).save(path)
    return path


def test_label_index_accepts_names_indices_and_ungradable() -> None:
    assert label_index("referable glaucoma", GLAUCOMA, "x") == 1
    assert label_index("No Referable Glaucoma", GLAUCOMA, "x") == 0  # unambiguous case-fold
    assert label_index("1", GLAUCOMA, "x") == 1
    assert label_index("ungradable", GLAUCOMA, "x") == -1
    assert label_index("4", DR_GRADING, "x") == 4
    with pytest.raises(DatasetLayoutError, match=r"here: label '2' is not a class"):
        label_index("2", GLAUCOMA, "here")


def test_csv_maps_class_names_and_keeps_patient_and_eye(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        write_image(tmp_path / "img" / name)
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "file,dx,pid,side\n"
        "a.jpg,referable glaucoma,P1,OD\n"
        "b,no referable glaucoma,P1,L\n"
        "sub/c,referable glaucoma,,\n"
    )
    columns = CsvColumns(image="file", label="dx", patient="pid", eye="side")
    records = load_csv(tmp_path / "img", csv, GLAUCOMA, columns=columns).records
    assert [r.grade for r in records] == [1, 0, 1]
    assert [r.patient for r in records] == ["P1", "P1", "sub/c"]
    assert [r.eye for r in records] == ["right", "left", ""]
    assert records[1].path.name == "b.png"  # found with its suffix added


def test_csv_label_outside_the_task_names_value_and_row(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("image,label\na.jpg,no referable glaucoma\na.jpg,glaucoma suspect\n")
    with pytest.raises(DatasetLayoutError, match=r"labels.csv: row 3.*'glaucoma suspect'"):
        load_csv(tmp_path, csv, GLAUCOMA, on_error="skip")  # never skipped


def test_csv_missing_image_raises_or_is_skipped(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("image,label\na.jpg,0\ngone.jpg,1\n")
    with pytest.raises(BadImageError, match=r"gone\.jpg"):
        load_csv(tmp_path, csv, GLAUCOMA)
    index = load_csv(tmp_path, csv, GLAUCOMA, on_error="skip")
    assert len(index.records) == 1 and len(index.skipped) == 1


def test_class_folders_by_name_and_unknown_folder_named(tmp_path: Path) -> None:
    write_image(tmp_path / "referable glaucoma" / "7_left.jpg")
    write_image(tmp_path / "no referable glaucoma" / "7_right.jpg")
    records = load_class_folders(tmp_path, GLAUCOMA).records
    assert sorted((r.grade, r.patient, r.eye) for r in records) == [
        (0, "7", "right"),
        (1, "7", "left"),
    ]
    (tmp_path / "cataract").mkdir()
    with pytest.raises(DatasetLayoutError, match="folder 'cataract'"):
        load_class_folders(tmp_path, GLAUCOMA)


def test_multilabel_fits_a_csv_only() -> None:
    with pytest.raises(DatasetLayoutError, match=r"multilabel.*--layout csv"):
        check_task_fits(FINDINGS)
    check_task_fits(FINDINGS, "csv")
    check_task_fits(load_task(TASKS / "amd-staging.yaml"))  # four classes fit


def test_multilabel_csv_reads_findings_separated_by_semicolons(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "image,label\n"
        "a.jpg,referable DR; amd\n"  # names case-folded when unambiguous
        "a.jpg,\n"
        "a.jpg,None\n"
        "a.jpg,ungradable\n"
        "a.jpg,drusen only\n"
    )
    records = load_csv(tmp_path, csv, FINDINGS).records
    assert [r.labels for r in records] == [
        (1, 0, 1, 0), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 1)
    ]  # fmt: skip
    assert [r.grade for r in records] == [0, 0, 0, -1, 0]
    assert [r.gradable for r in records] == [True, True, True, False, True]
    csv.write_text("image,label\na.jpg,AMD\na.jpg,AMD;cataract\n")
    with pytest.raises(DatasetLayoutError, match=r"labels.csv: row 3.*finding 'cataract'"):
        load_csv(tmp_path, csv, FINDINGS, on_error="skip")
    with pytest.raises(DatasetLayoutError, match="multilabel"):
        load_class_folders(tmp_path, FINDINGS)


def test_arrays_carry_findings_through_subset_concat_and_files(tmp_path: Path) -> None:
    n = 4
    plain = {
        "images": np.zeros((n, 8, 8, 3), np.uint8),
        "grade": np.array([0, 0, -1, 0]),
        "gradable": np.array([True, True, False, True]),
        "site": np.array(["s"] * n),
        "patient": np.array(["a", "b", "c", "d"]),
    }
    labels = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], np.uint8)
    arrays = FundusArrays(**plain, labels=labels)
    back = FundusArrays.load(arrays.save(tmp_path / "s.npz"))
    assert np.array_equal(back.targets(FINDINGS), labels)
    both = FundusArrays.concat([back.subset(slice(0, 1)), back.subset(np.array([3]))])
    assert np.array_equal(both.labels, labels[[0, 3]])
    old = FundusArrays.load(FundusArrays(**plain).save(tmp_path / "old.npz"))
    assert old.labels is None and old.targets(DR_GRADING) is old.grade
    with pytest.raises(ValueError, match="these images hold no findings"):
        old.targets(FINDINGS)
    with pytest.raises(ValueError, match="findings and images without"):
        FundusArrays.concat([old, back])
    with pytest.raises(ValueError, match="grade is 0"):
        FundusArrays(**{**plain, "grade": np.array([0, 2, 0, 0])}, labels=labels)
