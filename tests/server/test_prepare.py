"""Tests for ``fovea data prepare``: images on disk to the dataset directory training reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from models.datasets import FundusArrays
from server.cli import app
from server.training import DataConfig, PrepareOptions, load_splits, prepare_dataset

runner = CliRunner()
GLAUCOMA_YAML = Path(__file__).resolve().parents[2] / "configs" / "tasks" / "glaucoma-referral.yaml"


def write_jpeg(path: Path, shade: int = 150) -> Path:
    """A small fundus-like JPEG: a bright disc on black, wider than tall."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:60, :80]
    img = np.zeros((60, 80, 3), np.uint8)
    img[(yy - 30) ** 2 + (xx - 40) ** 2 <= 26**2] = (200, shade, 60)
    Image.fromarray(img).save(path, quality=90)
    return path


def eyepacs(root: Path, patients: int = 10) -> dict[str, int]:
    """An EyePACS-style folder: trainLabels.csv and train/<id>_<eye>.jpeg; returns the grades."""
    grades = {
        f"{p}_{eye}": (p + (eye == "left")) % 5
        for p in range(patients)
        for eye in ("left", "right")
    }
    for image in grades:
        write_jpeg(root / "train" / f"{image}.jpeg")
    lines = ["image,level", *(f"{image},{g}" for image, g in grades.items())]
    (root / "trainLabels.csv").write_text("\n".join(lines) + "\n")
    return grades


def prepare(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["data", "prepare", *args])
    return result.exit_code, result.output


def test_eyepacs_at_128_px_loads_as_patient_level_splits(tmp_path: Path) -> None:
    grades = eyepacs(tmp_path / "src", patients=20)
    out = tmp_path / "data"
    code, output = prepare(str(tmp_path / "src"), "--out", str(out), "--size", "128")
    assert code == 0, output
    assert "prepared site eyepacs" in output and str(out / "eyepacs") in output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["schema_version"] == 1 and meta["sites"] == {"eyepacs": "eyepacs/"}
    done = meta["prepared"]["eyepacs"]
    assert (done["layout"], done["size"], done["task"]["name"]) == ("eyepacs", 128, "dr-grading")
    assert (done["images"], done["patients"], done["skipped"]) == (40, 20, [])
    assert done["counts"]["no DR"] == sum(g == 0 for g in grades.values())

    cfg = DataConfig(dir=out, train_sites=["eyepacs"], test_site=None, val_fraction=0.25)
    splits = load_splits(cfg, seed=0)
    assert splits.train.images.shape[1:] == (128, 128, 3)
    assert len(splits.train) + len(splits.val) == 40 and len(splits.val) > 0
    assert not set(splits.train.patient) & set(splits.val.patient)  # patient-level split
    assert set(splits.train.site) == {"eyepacs"}
    assert splits.train.sharded  # the images stay on disk, read when a batch needs them
    site = FundusArrays.load_sharded(out / "eyepacs")
    assert sorted(site.grade.tolist()) == sorted(grades.values())


def test_csv_with_class_names_for_the_glaucoma_task(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    names = {"p1_left": "referable glaucoma", "p1_right": "no referable glaucoma"}
    names |= {"p2_left": "no referable glaucoma", "p3": "referable glaucoma"}
    for image in names:
        write_jpeg(src / f"{image}.jpg")
    csv = tmp_path / "dx.csv"
    csv.write_text("file,diagnosis\n" + "".join(f"{i}.jpg,{d}\n" for i, d in names.items()))
    out = tmp_path / "data"
    code, output = prepare(
        str(src), "--out", str(out), "--size", "32", "--csv", str(csv),
        "--image-column", "file", "--label-column", "diagnosis",
        "--task", str(GLAUCOMA_YAML), "--site", "clinic-a",
    )  # fmt: skip
    assert code == 0, output
    site = FundusArrays.load_sharded(out / "clinic-a")
    assert site.grade.tolist() == [1, 0, 0, 1]
    assert site.patient.tolist() == ["p1", "p1", "p2", "p3"]
    done = json.loads((out / "dataset.json").read_text())["prepared"]["clinic-a"]
    assert done["task"]["kind"] == "binary" and done["layout"] == "csv"
    assert done["counts"] == {"no referable glaucoma": 2, "referable glaucoma": 2, "ungradable": 0}


def test_folder_per_class_is_detected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for grade in ("0", "2", "ungradable"):
        for n in range(2):
            write_jpeg(src / grade / f"{grade}{n}_left.jpg")
    code, output = prepare(str(src), "--out", str(tmp_path / "data"), "--size", "32")
    assert code == 0, output
    site = FundusArrays.load_sharded(tmp_path / "data" / "folders")
    assert sorted(site.grade.tolist()) == [-1, -1, 0, 0, 2, 2]
    assert site.gradable.tolist().count(False) == 2


def test_missing_image_fails_naming_it_or_is_skipped_and_counted(tmp_path: Path) -> None:
    eyepacs(tmp_path / "src", patients=3)
    (tmp_path / "src" / "train" / "1_left.jpeg").unlink()
    (tmp_path / "src" / "train" / "2_left.jpeg").write_bytes(b"not a jpeg")
    out = tmp_path / "data"
    code, output = prepare(str(tmp_path / "src"), "--out", str(out), "--size", "32")
    assert code == 2 and "'1_left' not found" in output and "Traceback" not in output
    assert not (out / "eyepacs").exists()
    code, output = prepare(str(tmp_path / "src"), "--out", str(out), "--size", "32", "--skip-bad")
    assert code == 0, output
    assert "skipped 2" in output
    done = json.loads((out / "dataset.json").read_text())["prepared"]["eyepacs"]
    assert done["images"] == 4 and len(done["skipped"]) == 2
    assert any("2_left.jpeg" in s["file"] for s in done["skipped"])


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "src" / "1" / "a.jpg")
    (tmp_path / "src" / "1" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    code, output = prepare(str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--size", "32")
    assert code == 2 and "b.jpg" in output and "--skip-bad" in output


def test_bad_inputs_give_one_clear_message(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_jpeg(src / "a.jpg")
    (src / "labels.csv").write_text("image,label\na.jpg,cataract\n")
    out = str(tmp_path / "data")
    code, output = prepare(str(src), "--out", out, "--layout", "csv", "--task", str(GLAUCOMA_YAML))
    assert code == 2 and "row 2" in output and "'cataract' is not a class" in output
    code, output = prepare(str(src), "--out", out, "--layout", "kaggle")
    assert code == 2 and "unknown layout 'kaggle'" in output
    (tmp_path / "empty").mkdir()
    code, output = prepare(str(tmp_path / "empty"), "--out", out)
    assert code == 2 and "empty" in output
    code, output = prepare(str(tmp_path / "nowhere"), "--out", out)
    assert code == 2 and "not a directory" in output
    assert not (tmp_path / "data" / "dataset.json").exists()


def test_an_interrupted_prepare_resumes_without_redoing_finished_chunks(tmp_path: Path) -> None:
    eyepacs(tmp_path / "src", patients=5)  # 10 images, chunks of 4
    out = tmp_path / "data"
    options = PrepareOptions(source=tmp_path / "src", out=out, size=32, chunk=4, workers=2)

    def interrupt(description: str, done: int, total: int) -> None:
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(options, interrupt)
    assert not (out / "eyepacs").exists() and not (out / "dataset.json").exists()
    seen: list[int] = []
    resumed = prepare_dataset(options, lambda d, done, t: seen.append(done))
    assert resumed.reused == 4 and resumed.images == 10
    assert seen[0] == 4  # the finished first chunk was read back, not decoded
    assert not (out / ".prepare-eyepacs").exists()
    fresh = prepare_dataset(
        PrepareOptions(source=tmp_path / "src", out=tmp_path / "fresh", size=32)
    )
    a, b = FundusArrays.load_sharded(resumed.path), FundusArrays.load_sharded(fresh.path)
    assert np.array_equal(a.pixels(), b.pixels()) and a.patient.tolist() == b.patient.tolist()
    again = prepare_dataset(options)  # finished: nothing to redo
    assert again.reused == 10


def test_sites_accumulate_and_a_size_clash_is_refused(tmp_path: Path) -> None:
    eyepacs(tmp_path / "src", patients=2)
    out = tmp_path / "data"
    for site in ("a", "b"):
        prepare_dataset(PrepareOptions(source=tmp_path / "src", out=out, size=32, site=site))
    meta = json.loads((out / "dataset.json").read_text())
    assert set(meta["sites"]) == {"a", "b"} and set(meta["prepared"]) == {"a", "b"}
    with pytest.raises(ValueError, match="at 32 px, not 64"):
        prepare_dataset(PrepareOptions(source=tmp_path / "src", out=out, size=64, site="c"))


def test_synthetic_sites_join_prepared_ones_without_dropping_them(tmp_path: Path) -> None:
    from server.training import synthesise

    eyepacs(tmp_path / "src", patients=2)
    out = tmp_path / "data"
    prepare_dataset(PrepareOptions(source=tmp_path / "src", out=out, size=32, site="clinic"))
    synthesise(out, sites=["site-a"], per_site=8, size=32, seed=0)
    meta = json.loads((out / "dataset.json").read_text())
    assert set(meta["sites"]) == {"clinic", "site-a"} and set(meta["prepared"]) == {"clinic"}
    with pytest.raises(ValueError, match=r"prepared sites \['clinic'\] at 32 px"):
        synthesise(out, sites=["site-b"], per_site=8, size=64, seed=0)
