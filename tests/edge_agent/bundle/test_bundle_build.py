"""Building a signed bundle from an export directory and opening it again."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy.bundle import build_bundle
from edge_agent.bundle import (
    BundleError,
    Keyring,
    Manifest,
    key_id,
    load_public_key,
    open_bundle,
    verify_tree,
)
from models.task import GRADE_NAMES


def test_manifest_carries_the_export(tiny_export: Path, bundle: Path, keyring: Keyring) -> None:
    export = json.loads((tiny_export / "export.json").read_text())
    manifest = open_bundle(bundle, bundle.parent / "out", keyring)
    assert manifest.version == 2
    assert manifest.name == export["model"]["name"]
    assert manifest.family == export["model"]["family"]
    assert manifest.labels == GRADE_NAMES
    assert manifest.preprocess.size == export["preprocess"]["size"]
    referral = export["operating_point"]["referral_threshold"]
    assert manifest.thresholds.referral == pytest.approx(referral)
    assert manifest.accuracy_budget_points.int8 == export["budget"]["int8_points"]
    assert set(manifest.precisions) == set(export["precisions"])
    fp32 = export["precisions"]["fp32"]
    assert manifest.precisions["fp32"].heldout_accuracy == fp32["heldout"]["accuracy"]
    assert manifest.engine_recipe == json.loads((tiny_export / "recipe.json").read_text())
    on_disk = sorted(
        p.relative_to(tiny_export).as_posix() for p in tiny_export.rglob("*") if p.is_file()
    )
    assert sorted(manifest.files) == on_disk
    signer = load_public_key(next(keyring.trusted.glob("*.pub")))
    assert manifest.signer == key_id(signer)


def test_extracted_files_match_the_export(
    tiny_export: Path, bundle: Path, keyring: Keyring
) -> None:
    dest = bundle.parent / "out"
    manifest = open_bundle(bundle, dest, keyring)
    for name in manifest.files:
        assert (dest / name).read_bytes() == (tiny_export / name).read_bytes()
    assert verify_tree(dest, keyring) == manifest
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert names[:2] == ["manifest.json", "manifest.sig"]


def test_nested_files_round_trip(
    tiny_export: Path, tmp_path: Path, signing_key: tuple[Path, Path], keyring: Keyring
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    (export / "engines" / "sm72-trt8.5").mkdir(parents=True)
    (export / "engines" / "sm72-trt8.5" / "model.fp16.plan").write_bytes(b"\x00engine" * 10)
    tar = build_bundle(export, tmp_path / "b.tar", 1, signing_key[0])
    manifest = open_bundle(tar, tmp_path / "out", keyring)
    assert "engines/sm72-trt8.5/model.fp16.plan" in manifest.files
    assert (tmp_path / "out/engines/sm72-trt8.5/model.fp16.plan").read_bytes() == b"\x00engine" * 10


def test_export_with_a_symlink_is_refused(
    tiny_export: Path, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    (export / "link.onnx").symlink_to(export / "model.fp32.onnx")
    with pytest.raises(BundleError, match="link"):
        build_bundle(export, tmp_path / "b.tar", 1, signing_key[0])
    assert not (tmp_path / "b.tar").exists()


def test_not_an_export_dir(tmp_path: Path, signing_key: tuple[Path, Path]) -> None:
    with pytest.raises(BundleError, match=r"export\.json is missing"):
        build_bundle(tmp_path, tmp_path / "b.tar", 1, signing_key[0])


def test_manifest_schema_is_strict(bundle: Path, keyring: Keyring) -> None:
    manifest = open_bundle(bundle, bundle.parent / "out", keyring)
    data = manifest.model_dump(mode="json")
    with pytest.raises(ValidationError, match="extra"):
        Manifest.model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Manifest.model_validate({**data, "version": 0})
    with pytest.raises(ValidationError, match="unsafe path"):
        Manifest.model_validate({**data, "files": {"../x": data["files"]["export.json"]}})
    with pytest.raises(ValidationError, match="labels"):
        Manifest.model_validate({**data, "labels": ["a", "b"]})
    with pytest.raises(BundleError, match="invalid manifest field version"):
        Manifest.from_bytes(json.dumps({**data, "version": "x"}).encode(), "m.json")
    assert Manifest.from_bytes(manifest.to_bytes(), "m.json") == manifest
