"""ONNX Runtime backend on a real exported model: checked inputs, outputs, registry, golden."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.runtime import (
    BackendError,
    OrtBackend,
    backend_names,
    create_backend,
    golden_check,
    register_backend,
)
from edge_agent.runtime.backend import Backend, Outputs
from edge_agent.runtime.ort_backend import provider_chain


def _size(export: Path) -> int:
    return int(json.loads((export / "export.json").read_text())["preprocess"]["size"])


@pytest.fixture(scope="module")
def fp32(tiny_export: Path) -> OrtBackend:
    return OrtBackend(tiny_export / "model.fp32.onnx", "fp32", image_size=_size(tiny_export))


def test_registry_creates_onnxruntime(tiny_export: Path) -> None:
    assert {"onnxruntime", "tensorrt"} <= set(backend_names())
    b = create_backend(
        "onnxruntime", tiny_export / "model.int8.onnx", "int8", image_size=_size(tiny_export)
    )
    assert b.name == "onnxruntime" and b.precision == "int8"
    assert b.providers == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        create_backend("nope", tiny_export / "model.fp32.onnx", "fp32", image_size=32)


def test_infer_matches_golden_outputs(fp32: OrtBackend, tiny_export: Path) -> None:
    with np.load(tiny_export / "golden.npz") as g:
        out = fp32.infer(g["images"])
        np.testing.assert_allclose(out.grade_logits, g["grade_logits"], atol=1e-3)
        np.testing.assert_allclose(out.gradable_logit, g["gradable_logit"], atol=1e-3)
    assert len(out) == len(out.rows(0, 2)) + len(out) - 2


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((1, 3, 32, 32), np.float64), "float32"),
        (np.zeros((1, 3, 16, 16), np.float32), "shape"),
        (np.zeros((0, 3, 32, 32), np.float32), "N >= 1"),
        (np.full((2, 3, 32, 32), np.nan, np.float32), "NaN"),
        (np.full((1, 3, 32, 32), np.inf, np.float32), "NaN or infinite"),
    ],
)
def test_bad_inputs_are_refused(fp32: OrtBackend, images: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fp32.infer(images)


def test_huge_finite_values_are_not_mistaken_for_nan(fp32: OrtBackend) -> None:
    x = np.full((1, 3, 32, 32), 3e38, np.float32)  # the sum overflows; every value is finite
    assert len(fp32.infer(x)) == 1


def test_golden_check_passes_each_precision(tiny_export: Path) -> None:
    for p in ("fp32", "fp16", "int8", "int8dyn"):
        b = OrtBackend(tiny_export / f"model.{p}.onnx", p, image_size=_size(tiny_export))
        result = golden_check(b, tiny_export)
        assert result.passed, (p, result.describe())
        assert result.images == 4


def test_golden_check_fails_for_another_model(tiny_export: Path, tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    shutil.copytree(tiny_export, slot)
    with np.load(slot / "golden.npz") as g:
        arrays = dict(g)
    arrays["grade_logits"] = arrays["grade_logits"] + 0.5
    np.savez(slot / "golden.npz", **arrays)
    b = OrtBackend(slot / "model.fp32.onnx", "fp32", image_size=_size(slot))
    result = golden_check(b, slot)
    assert not result.passed
    assert result.worst_output == "grade_logits"
    assert result.max_abs_error == pytest.approx(0.5, abs=1e-3)
    assert "exceeds" in result.describe()


def test_load_errors_name_the_file(tmp_path: Path, tiny_export: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        OrtBackend(tmp_path / "missing.onnx", "fp32", image_size=32)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(BackendError, match=str(bad)):
        OrtBackend(bad, "fp32", image_size=32)
    with pytest.raises(BackendError, match="unknown precision"):
        OrtBackend(tiny_export / "model.fp32.onnx", "int4", image_size=32)


def test_wrong_model_is_refused(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "identity.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    with pytest.raises(BackendError, match="expected one input 'images'"):
        OrtBackend(path, "fp32", image_size=32)


def test_provider_chain_keeps_only_installed(tmp_path: Path) -> None:
    chain = provider_chain("fp16", tmp_path / "engines")
    assert [name for name, _ in chain][-1] == "CPUExecutionProvider"
    with pytest.raises(BackendError, match="none of the ONNX Runtime providers"):
        provider_chain("fp32", None, ["NoSuchExecutionProvider"])


def test_output_shapes_are_checked(tiny_export: Path) -> None:
    @register_backend("test-wrong-shape")
    class Wrong(Backend):
        def _run(self, images: np.ndarray) -> Outputs:
            return Outputs(np.zeros((len(images), 4), np.float32), np.zeros((len(images), 1)))

    b = create_backend("test-wrong-shape", tiny_export / "model.fp32.onnx", "fp32", image_size=32)
    with pytest.raises(BackendError, match="is this a Fovea model"):
        b.infer(np.zeros((2, 3, 32, 32), np.float32))
