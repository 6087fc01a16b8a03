"""TensorRT calibration cache: header, big-endian float32 scales, ranges = scale x 127."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from server.export.calibration_cache import (
    activation_tensors,
    cache_coverage,
    read_cache,
    scale_hex,
    trt_header,
    write_ranges,
)


def test_header_for_jetpack_51() -> None:
    assert trt_header("8.5.2") == "TRT-8502-EntropyCalibration2"
    assert trt_header("8.6.1.6") == "TRT-8601-EntropyCalibration2"
    # from 10 on the version number is major*10000 + minor*100 + patch
    assert trt_header("10.3.0") == "TRT-100300-EntropyCalibration2"
    assert trt_header("10.14.1") == "TRT-101401-EntropyCalibration2"
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR\.PATCH"):
        trt_header("8.5")


def test_scale_is_big_endian_float32_hex() -> None:
    assert scale_hex(1.0) == "3f800000"
    assert scale_hex(0.5) == "3f000000"
    assert struct.unpack(">f", bytes.fromhex(scale_hex(0.0123)))[0] == pytest.approx(0.0123)


def test_written_cache_round_trips(tmp_path: Path) -> None:
    scales = {"images": 2.0 / 127, "/model/stem/Relu_output_0": 0.05}
    write_ranges(scales, tmp_path / "r.json", tmp_path / "c.cache")
    header, back = read_cache(tmp_path / "c.cache")
    assert header == "TRT-8502-EntropyCalibration2"
    assert back == pytest.approx(scales)
    ranges = json.loads((tmp_path / "r.json").read_text())["tensors"]
    assert ranges["images"]["range"] == pytest.approx(2.0)


def _small_graph(path: Path) -> Path:
    """images -> Conv -> Add(constant) -> MaxPool -> Shape (int64) -> out; a weight initializer."""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["conv"]),
        helper.make_node(
            "Constant", [], ["one"], value=numpy_helper.from_array(np.ones(1, np.float32))
        ),
        helper.make_node("Add", ["conv", "one"], ["add"]),
        helper.make_node("MaxPool", ["add"], ["pool"], kernel_shape=[2, 2]),
        helper.make_node("Shape", ["pool"], ["shape"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("shape", TensorProto.INT64, None),
        ],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_coverage_names_the_activations_a_cache_misses(tmp_path: Path) -> None:
    model = _small_graph(tmp_path / "m.onnx")
    # float inputs and node outputs; not the weight, the Constant or the int64 shape
    assert activation_tensors(onnx.load(str(model))) == ["images", "conv", "add", "pool"]
    write_ranges({"images": 0.1, "conv": 0.2}, tmp_path / "r.json", tmp_path / "c.cache")
    coverage = cache_coverage(model, tmp_path / "c.cache")
    assert coverage.covered == ["images", "conv"] and coverage.missing == ["add", "pool"]
    assert coverage.as_dict() == {
        "needed": 4,
        "covered": 2,
        "complete": False,
        "missing": ["add", "pool"],
    }
