"""Tests for the public-dataset and DICOM loaders in models.datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.datasets import (
    BadImageError,
    DatasetLayoutError,
    FundusArrays,
    FundusRecord,
    detect_layout,
    load_aptos,
    load_dicom,
    load_eyepacs,
    load_folders,
    load_idrid,
    load_index,
    load_messidor2,
    materialise,
    read_dicom_image,
    read_image,
    split_by_patient,
)
from models.datasets.dicom import OPHTHALMIC_PHOTOGRAPHY_8BIT
from models.preprocess import PreprocessSpec

DISC = (200, 120, 60)


def fundus(height: int = 32, width: int = 32, radius: int = 10) -> np.ndarray:
    """A bright disc on black, centred."""
    yy, xx = np.mgrid[:height, :width]
    inside = (yy - height // 2) ** 2 + (xx - width // 2) ** 2 <= radius**2
    img = np.zeros((height, width, 3), np.uint8)
    img[inside] = DISC
    return img


def write_image(path: Path, img: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fundus() if img is None else img).save(path)
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str,
    *,
    patient: str = "P1",
    laterality: str = "",
    bits: int = 8,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = OPHTHALMIC_PHOTOGRAPHY_8BIT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    if laterality:
        ds.ImageLaterality = laterality
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --- layouts ---------------------------------------------------------------------------------


def make_eyepacs(root: Path) -> Path:
    write_csv(root / "trainLabels.csv", ["image,level", "10_left,0", "10_right,2", "13_left,4"])
    write_image(root / "10_left.jpeg")
    write_image(root / "10_right.jpeg")
    write_image(root / "train" / "13_left.png")
    return root


def make_aptos(root: Path) -> Path:
    write_csv(root / "train.csv", ["id_code,diagnosis", "000c1434d8d7,2", "001639a390f0,4"])
    write_image(root / "train_images" / "000c1434d8d7.png")
    write_image(root / "001639a390f0.png")
    return root


def make_messidor(root: Path, csv_name: str = "messidor_data.csv") -> Path:
    write_csv(
        root / csv_name,
        [
            "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable",
            "20051020_43808_0100_PP.png,0,0,1",
            "IM002385.JPG,3,1,1",
            "IM002386.JPG,,,0",
        ],
    )
    write_image(root / "IMAGES" / "20051020_43808_0100_PP.png")
    write_image(root / "messidor-2" / "preprocess" / "20051020_43808_0100_PP.png")
    write_image(root / "IMAGES" / "IM002385.JPG")
    write_image(root / "IMAGES" / "IM002386.JPG")
    return root


def make_idrid(root: Path) -> Path:
    labels = root / "B. Disease Grading" / "2. Groundtruths"
    header = "Image name,Retinopathy grade,Risk of macular edema ,,,,"
    write_csv(
        labels / "a. IDRiD_Disease Grading_Training Labels.csv", [header, "IDRiD_001,3,2,,,,"]
    )
    write_csv(labels / "b. IDRiD_Disease Grading_Testing Labels.csv", [header, "IDRiD_001,1,0,,,,"])
    images = root / "B. Disease Grading" / "1. Original Images"
    write_image(images / "a. Training Set" / "IDRiD_001.jpg")
    write_image(images / "b. Testing Set" / "IDRiD_001.jpg")
    return root


def make_folders(root: Path) -> Path:
    write_image(root / "0" / "7_left.png")
    write_image(root / "0" / "7_right.jpg")
    write_image(root / "3" / "8.jpeg")
    write_image(root / "ungradable" / "9_left.png")
    (root / "3" / "notes.txt").write_text("not an image")
    return root


def make_dicom(root: Path) -> Path:
    write_dicom(root / "a.dcm", fundus(), "RGB", patient="PX", laterality="L")
    write_dicom(root / "sub" / "b.dcm", fundus()[:, :, 0], "MONOCHROME2", patient="PX")
    write_csv(root / "labels.csv", ["file,grade,gradable", "a.dcm,2,1", "sub/b.dcm,,0"])
    return root


def test_eyepacs_patients_eyes_and_image_lookup(tmp_path: Path) -> None:
    idx = load_eyepacs(make_eyepacs(tmp_path))
    got = {(r.image_id, r.patient, r.eye, r.grade) for r in idx.records}
    assert got == {("10_left", "10", "left", 0), ("10_right", "10", "right", 2)} | {
        ("13_left", "13", "left", 4)
    }
    by_id = {r.image_id: r for r in idx.records}
    assert by_id["13_left"].path == tmp_path / "train" / "13_left.png"
    assert idx.skipped == []


def test_aptos_finds_images_in_train_images_and_root(tmp_path: Path) -> None:
    idx = load_aptos(make_aptos(tmp_path))
    by_id = {r.image_id: r for r in idx.records}
    assert by_id["000c1434d8d7"].path.parent.name == "train_images"
    assert by_id["001639a390f0"].path.parent == tmp_path
    assert [r.grade for r in idx.records] == [2, 4]


def test_messidor_ungradable_rows_and_shallowest_copy(tmp_path: Path) -> None:
    idx = load_messidor2(make_messidor(tmp_path))
    by_id = {r.image_id: r for r in idx.records}
    assert by_id["IM002386.JPG"].grade == -1
    assert by_id["IM002386.JPG"].gradable is False
    assert by_id["IM002385.JPG"].grade == 3
    assert by_id["IM002385.JPG"].patient == "IM002385"
    assert by_id["20051020_43808_0100_PP.png"].path.parent.name == "IMAGES"


def test_messidor_accepts_any_single_csv_but_not_two(tmp_path: Path) -> None:
    make_messidor(tmp_path, csv_name="labels.csv")
    assert len(load_messidor2(tmp_path).records) == 3
    write_csv(tmp_path / "other.csv", ["a,b"])
    with pytest.raises(DatasetLayoutError, match=r"other\.csv"):
        load_messidor2(tmp_path)


def test_idrid_trailing_space_header_and_train_test_name_clash(tmp_path: Path) -> None:
    idx = load_idrid(make_idrid(tmp_path))
    grades = {r.path.parent.name: r.grade for r in idx.records}
    assert grades == {"a. Training Set": 3, "b. Testing Set": 1}
    assert len({r.patient for r in idx.records}) == 2


def test_folders_grades_ungradable_and_eyes(tmp_path: Path) -> None:
    idx = load_folders(make_folders(tmp_path))
    got = sorted((r.image_id, r.grade, r.gradable, r.patient, r.eye) for r in idx.records)
    assert got == [
        ("0/7_left", 0, True, "7", "left"),
        ("0/7_right", 0, True, "7", "right"),
        ("3/8", 3, True, "8", ""),
        ("ungradable/9_left", -1, False, "9", "left"),
    ]


def test_folders_unknown_subfolder_is_named(tmp_path: Path) -> None:
    make_folders(tmp_path)
    (tmp_path / "severe").mkdir()
    with pytest.raises(DatasetLayoutError, match="severe"):
        load_folders(tmp_path)


def test_dicom_index_labels_patient_and_laterality(tmp_path: Path) -> None:
    idx = load_dicom(make_dicom(tmp_path))
    by_id = {r.image_id: r for r in idx.records}
    assert (by_id["a"].grade, by_id["a"].gradable, by_id["a"].eye) == (2, True, "left")
    assert (by_id["sub/b"].grade, by_id["sub/b"].gradable, by_id["sub/b"].eye) == (-1, False, "")
    assert {r.patient for r in idx.records} == {"PX"}


def test_dicom_without_labels_has_unknown_grade(tmp_path: Path) -> None:
    write_dicom(tmp_path / "x.dcm", fundus(), "RGB", patient="", laterality="R")
    (rec,) = load_dicom(tmp_path).records
    assert (rec.grade, rec.patient, rec.eye) == (-1, "x", "right")


@pytest.mark.parametrize(
    ("maker", "name"),
    [
        (make_eyepacs, "eyepacs"),
        (make_aptos, "aptos"),
        (make_messidor, "messidor2"),
        (make_idrid, "idrid"),
        (make_folders, "folders"),
        (make_dicom, "dicom"),
    ],
)
def test_detect_layout_and_load_index(tmp_path: Path, maker, name: str) -> None:  # type: ignore[no-untyped-def]
    maker(tmp_path)
    assert detect_layout(tmp_path) == name
    idx = load_index(tmp_path)
    assert idx.records
    assert {r.layout for r in idx.records} == {name}


def test_detect_layout_lists_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetLayoutError, match=r"trainLabels\.csv.*\*\.dcm"):
        detect_layout(tmp_path)


# --- images -------------------------------------------------------------------------------------


def test_read_dicom_rgb_and_monochrome(tmp_path: Path) -> None:
    img = fundus()
    rgb = read_dicom_image(write_dicom(tmp_path / "rgb.dcm", img, "RGB"))
    mono = read_dicom_image(write_dicom(tmp_path / "m.dcm", img[:, :, 0], "MONOCHROME2"))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    np.testing.assert_array_equal(rgb, img)
    assert mono.shape == (32, 32, 3)
    np.testing.assert_array_equal(mono[:, :, 2], img[:, :, 0])


def test_read_dicom_ybr_full_is_converted_to_rgb(tmp_path: Path) -> None:
    img = fundus()
    ybr = convert_color_space(img, "RGB", "YBR_FULL")
    out = read_dicom_image(write_dicom(tmp_path / "y.dcm", ybr, "YBR_FULL"))
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 2


def test_read_dicom_16_bit_is_scaled(tmp_path: Path) -> None:
    pixels = np.array([[0, 2048], [4095, 1024]], dtype=np.uint16)
    out = read_dicom_image(write_dicom(tmp_path / "w.dcm", pixels, "MONOCHROME2", bits=12))
    assert out.dtype == np.uint8
    assert out[:, :, 0].tolist() == [[0, 128], [255, 64]]


def test_non_dicom_and_pixelless_dicom_are_bad_images(tmp_path: Path) -> None:
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"this is not dicom")
    with pytest.raises(BadImageError, match=r"fake\.dcm"):
        read_dicom_image(fake)
    with pytest.raises(BadImageError, match=r"fake\.dcm"):
        load_dicom(tmp_path)
    idx = load_dicom(tmp_path, on_error="skip")
    assert idx.records == [] and idx.skipped[0][0] == str(fake)
    nopix = write_dicom(tmp_path / "np.dcm", fundus(), "RGB")
    import pydicom

    ds = pydicom.dcmread(nopix)
    del ds.PixelData
    ds.save_as(nopix)
    with pytest.raises(BadImageError, match="no pixel data"):
        read_dicom_image(nopix)


def test_read_image_corrupt_bytes_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "0" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rec = load_folders(tmp_path).records[0]
    with pytest.raises(BadImageError, match=r"broken\.png"):
        read_image(rec)


def test_crop_to_fundus_removes_border_and_pads_square() -> None:
    img = np.zeros((40, 60, 3), np.uint8)
    img[5:25, 10:50] = 255
    out = PreprocessSpec(size=40).to_square(img)
    assert out.shape == (40, 40, 3)
    assert out[10:30].min() == 255 and out[:10].max() == 0


def test_materialise_shapes_labels_site_and_skips(tmp_path: Path) -> None:
    make_folders(tmp_path)
    write_image(tmp_path / "3" / "wide.png", fundus(32, 64, radius=12))
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "corrupt.jpg").write_bytes(b"not a jpeg")
    records = load_folders(tmp_path).records
    with pytest.raises(BadImageError, match=r"corrupt\.jpg"):
        materialise(records, PreprocessSpec(size=16))
    arrays, skipped = materialise(records, PreprocessSpec(size=16), on_error="skip")
    assert isinstance(arrays, FundusArrays)
    assert arrays.images.shape == (5, 16, 16, 3)
    assert [s[0] for s in skipped] == [str(tmp_path / "4" / "corrupt.jpg")]
    assert sorted(arrays.grade.tolist()) == [-1, 0, 0, 3, 3]
    assert set(arrays.site.tolist()) == {"folders"}
    assert arrays.gradable.tolist().count(False) == 1
    # the disc fills the frame after cropping: the centre is the disc colour, corners dark
    assert tuple(arrays.images[0, 8, 8]) == DISC
    assert arrays.images[:, 0, 0].max() < 100
    named, _ = materialise(records[:1], PreprocessSpec(size=16), site="clinic-a")
    assert named.site.tolist() == ["clinic-a"]


def test_materialise_empty_gives_empty_arrays() -> None:
    arrays, skipped = materialise([], PreprocessSpec(size=16))
    assert arrays.images.shape == (0, 16, 16, 3) and skipped == []


# --- splits ----------------------------------------------------------------------------------


def _records(n_patients: int) -> list[FundusRecord]:
    return [
        FundusRecord(Path(f"{p}_{eye}.png"), p % 5, True, str(p), eye, f"{p}_{eye}")
        for p in range(n_patients)
        for eye in ("left", "right")
    ]


def test_split_by_patient_keeps_patients_together_and_is_deterministic() -> None:
    records = _records(50)
    parts = split_by_patient(records, (0.6, 0.2, 0.2), seed=3)
    patient_sets = [{r.patient for r in part} for part in parts]
    assert sum(len(p) for p in parts) == len(records)
    assert not (patient_sets[0] & patient_sets[1]) and not (patient_sets[1] & patient_sets[2])
    assert [len(s) for s in patient_sets] == [30, 10, 10]
    again = split_by_patient(list(reversed(records)), (0.6, 0.2, 0.2), seed=3)
    assert [{r.patient for r in p} for p in again] == patient_sets
    other = split_by_patient(records, (0.6, 0.2, 0.2), seed=4)
    assert [{r.patient for r in p} for p in other] != patient_sets


def test_split_by_patient_rejects_fractions_not_summing_to_one() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_patient(_records(4), (0.5, 0.4), seed=0)


# --- malformed label files ----------------------------------------------------------------------


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "trainLabels.csv", ["image,grade", "10_left,0"])
    with pytest.raises(DatasetLayoutError, match=r"trainLabels\.csv.*'level'"):
        load_eyepacs(tmp_path)


@pytest.mark.parametrize(
    ("value", "reason"), [("two", "not an integer"), ("7", "outside 0-4"), ("", "not an integer")]
)
def test_bad_grade_names_file_row_column_value(tmp_path: Path, value: str, reason: str) -> None:
    write_csv(tmp_path / "train.csv", ["id_code,diagnosis", "a,1", f"b,{value}"])
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    with pytest.raises(
        DatasetLayoutError, match=rf"train\.csv: row 3, column 'diagnosis'.*{reason}"
    ):
        load_aptos(tmp_path)
    idx = load_aptos(tmp_path, on_error="skip")
    assert [r.image_id for r in idx.records] == ["a"]
    assert idx.skipped[0][0].endswith("train.csv:3")


def test_short_row_reads_as_empty_grade(tmp_path: Path) -> None:
    write_csv(tmp_path / "trainLabels.csv", ["image,level", "10_left"])
    with pytest.raises(DatasetLayoutError, match=r"row 2, column 'level': grade '' is not"):
        load_eyepacs(tmp_path)


def test_missing_image_raises_naming_it_or_is_counted(tmp_path: Path) -> None:
    make_eyepacs(tmp_path)
    (tmp_path / "10_right.jpeg").unlink()
    with pytest.raises(BadImageError, match="10_right"):
        load_eyepacs(tmp_path)
    idx = load_eyepacs(tmp_path, on_error="skip")
    assert len(idx.records) == 2 and len(idx.skipped) == 1
    assert "10_right" in idx.skipped[0][1]


def test_idrid_missing_image_is_skipped(tmp_path: Path) -> None:
    make_idrid(tmp_path)
    (
        tmp_path / "B. Disease Grading" / "1. Original Images" / "b. Testing Set" / "IDRiD_001.jpg"
    ).unlink()
    idx = load_idrid(tmp_path, on_error="skip")
    assert [r.grade for r in idx.records] == [3]
    assert "Testing" in idx.skipped[0][0]


def test_dicom_labels_for_missing_file_are_reported(tmp_path: Path) -> None:
    make_dicom(tmp_path)
    write_csv(tmp_path / "labels.csv", ["file,grade", "a.dcm,1", "gone.dcm,2"])
    with pytest.raises(BadImageError, match=r"gone\.dcm"):
        load_dicom(tmp_path)
    assert load_dicom(tmp_path, on_error="skip").skipped[0][0] == "gone.dcm"
