"""``export()`` end to end on a tiny run dir: every artifact, the report, atomic output, errors."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from server.export import ExportConfig, ExportInputError, export
from server.export.calibration_cache import cache_coverage, read_cache
from server.export.compact import compact_names
from server.export.int8 import CalibrationError

ARTIFACTS = (
    "model.fp32.onnx",
    "model.fp16.onnx",
    "model.int8.onnx",
    "model.int8dyn.onnx",
    "int8_ranges.json",
    "calibration.cache",
    "golden.npz",
    "validation.npz",
    "drift_reference.json",
    "recipe.json",
    "export.json",
    "checkpoint",
)


@pytest.fixture(scope="module")
def exported(
    tiny_run: Path,
    small_config: Callable[..., ExportConfig],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("exp") / "export"
    return export(tiny_run, out, small_config()).out


def test_every_artifact_is_written(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == sorted(ARTIFACTS)
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]


def test_the_weights_travel_with_the_export(exported: Path) -> None:
    import torch

    from models.nets import load_checkpoint

    report = json.loads((exported / "export.json").read_text())
    model, meta = load_checkpoint(exported / report["weights"])
    original, _ = load_checkpoint(report["checkpoint"])
    for (name, a), b in zip(
        model.state_dict().items(), original.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert meta.preprocess.model_dump(mode="json") == report["preprocess"]
    assert report["task"] == meta.task.model_dump(mode="json")  # the task travels too
    assert report["requires"] == list(meta.requires) == []  # a Fovea family needs nothing more


def test_report_covers_every_precision(exported: Path) -> None:
    report = json.loads((exported / "export.json").read_text())
    assert report["schema_version"] == 1
    assert set(report["precisions"]) == {"fp32", "fp16", "int8", "int8dyn"}
    for name, p in report["precisions"].items():
        assert p["size_bytes"] == (exported / p["file"]).stat().st_size
        assert 0 <= p["heldout"]["accuracy"] <= 100
        assert p["parity"]["max_abs_error"] >= 0, name
        assert p["latency"]["latency_ms_batch1"] > 0
    assert report["precisions"]["fp32"]["parity"]["passed"]
    assert report["precisions"]["int8"]["size_ratio"] < 0.6
    assert report["int8"]["method"] == "MinMax"
    assert report["budget"]["int8_points"] == 1.0
    assert {e["status"] for e in report["engines"]} <= {
        "skipped: TensorRT not installed",
        "skipped: no CUDA GPU",
        "built",
    }


def test_golden_and_validation_sets(exported: Path) -> None:
    with np.load(exported / "golden.npz") as g:
        assert g["images"].shape == (4, 3, 32, 32) and g["grade_logits"].shape == (4, 5)
    with zipfile.ZipFile(exported / "golden.npz") as z:  # it travels in every bundle
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    with np.load(exported / "validation.npz") as v:
        assert v["images"].shape == (20, 32, 32, 3) and v["images"].dtype == np.uint8
        assert float(v["budget_points"]) == 1.0


def test_calibration_cache_matches_the_ranges(exported: Path) -> None:
    header, scales = read_cache(exported / "calibration.cache")
    ranges = json.loads((exported / "int8_ranges.json").read_text())["tensors"]
    assert header == "TRT-8502-EntropyCalibration2"
    assert "images" in scales and set(scales) == set(ranges)
    for name, scale in scales.items():
        assert scale * 127 == pytest.approx(ranges[name]["range"], rel=1e-6)


def test_calibration_cache_covers_every_activation_of_the_fp32_graph(exported: Path) -> None:
    # TensorRT calibrates model.fp32.onnx: a tensor without a range runs in FP16/FP32
    coverage = cache_coverage(exported / "model.fp32.onnx", exported / "calibration.cache")
    graph = onnx.load(str(exported / "model.fp32.onnx")).graph
    assert len(coverage.needed) > sum(n.op_type in ("Conv", "Gemm") for n in graph.node)
    assert coverage.complete, coverage.missing
    report = json.loads((exported / "export.json").read_text())
    assert report["int8"]["calibration_cache"] == coverage.as_dict()


def test_qat_export_covers_the_fp32_graph_though_qat_names_differ(
    tiny_run: Path, small_config: Callable[..., ExportConfig], tmp_path: Path
) -> None:
    """The QAT model is exported on its own (BN folded): its tensor names are not the fp32
    graph's, so its scales alone covered a fraction of what TensorRT calibrates."""
    from models.nets import load_checkpoint
    from server.export.int8 import quantize_qdq
    from server.export.onnx_export import export_onnx

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model, meta = load_checkpoint(run / "student.json")
    src = export_onnx(model, meta.preprocess.size, tmp_path / "qat-src.onnx")
    compact_names(src)  # other names, as a separately exported graph has
    calib = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    quantize_qdq(src, run / "model.qat.onnx", calib, "MinMax")
    config = small_config(precisions=["fp32", "int8"], int8_source="qat")
    out = export(run, tmp_path / "export", config).out
    report = json.loads((out / "export.json").read_text())["int8"]
    cache = report["calibration_cache"]
    assert report["method"] == "qat" and cache["complete"] and cache["missing"] == []
    assert cache["qat_scales"] > 0 and cache["qat_scales_used"] < cache["qat_scales"]
    coverage = cache_coverage(out / "model.fp32.onnx", out / "calibration.cache")
    assert coverage.complete and cache["needed"] == len(coverage.needed)


def test_recipe_without_dla_keeps_the_fields_older_agents_read(exported: Path) -> None:
    recipe = json.loads((exported / "recipe.json").read_text())
    assert "dla_batches" not in recipe and recipe["dla_core"] is None
    assert recipe["channels"] == 3


def test_export_replaces_an_older_export(
    tiny_run: Path, small_config: Callable[..., ExportConfig], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export(tiny_run, out, small_config(precisions=["fp32"]))
    assert not (out / "stale.txt").exists() and (out / "model.fp32.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_failed_export_leaves_nothing_that_looks_complete(
    tiny_run: Path, small_config: Callable[..., ExportConfig], tmp_path: Path
) -> None:
    with pytest.raises(CalibrationError, match="at least 10000"):
        export(tiny_run, tmp_path / "export", small_config(min_calibration=10000))
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportInputError, match=str(tmp_path / "student.json")):
        export(tmp_path, tmp_path / "out")


def test_corrupt_weights_are_named(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "student.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ExportInputError, match=r"student\.json"):
        export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_compacted_int8_model_runs_identically(exported: Path, tmp_path: Path) -> None:
    # the export compacts its int8 files; take the fp32 graph's names through the same step
    src = tmp_path / "m.onnx"
    shutil.copy(exported / "model.fp32.onnx", src)
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    before = ort.InferenceSession(str(src)).run(None, {"images": x})
    size = src.stat().st_size
    saved = compact_names(src)
    after = ort.InferenceSession(str(src)).run(None, {"images": x})
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert saved > 0 and src.stat().st_size < size
    g = onnx.load(str(src)).graph
    assert [i.name for i in g.input] == ["images"]
    assert [o.name for o in g.output] == ["grade_logits", "gradable_logit"]
    assert all(len(n.name) <= 5 for n in g.node)
    # the exported int8 file was compacted too
    assert all(
        n.name.startswith("n") for n in onnx.load(str(exported / "model.int8.onnx")).graph.node
    )


def test_report_records_the_validation_operating_point_and_calibration(exported: Path) -> None:
    from models import GRADE_NAMES, point_from_metrics
    from models.nets import read_meta
    from server.export.report import operating_point_lines

    report = json.loads((exported / "export.json").read_text())
    meta = read_meta(Path(report["checkpoint"]))
    op = report["operating_point"]
    # exactly the checkpoint's point, chosen on its validation split when it was trained
    assert op == point_from_metrics(meta.metrics, meta.task).as_dict()
    assert op["referral_threshold"] == meta.metrics["referral_threshold"]
    assert op["temperature"] == meta.metrics["temperature"] > 0
    assert (op["target_sensitivity"], op["specificity_floor"]) == (0.95, 0.80)
    assert (op["warning"] is None) == (op["validation_specificity"] >= 0.80)
    fp32 = report["precisions"]["fp32"]["heldout"]
    assert set(fp32["recall"]) == set(GRADE_NAMES)  # per-grade recall on the held-out split
    assert set(report["precisions"]["int8"]["heldout"]["recall"]) == set(GRADE_NAMES)
    assert fp32["calibration"]["temperature"] == op["temperature"]
    assert 0 <= fp32["calibration"]["after"]["ece"] <= 1
    lines = operating_point_lines(report)
    assert lines[0].startswith("operating point (validation): refer at P(refer) >=")
    assert any(line.startswith("fp32 recall per class") for line in lines)
    assert operating_point_lines({"operating_point": {"referral_threshold": 0.4}}) == [
        "operating point (validation): refer at P(refer) >= 0.4000"
    ]  # an export made before calibration
