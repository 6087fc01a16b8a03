"""INT8: symmetric Q/DQ, calibration checks, and the accuracy-aware fallback on a real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import (
    MinMaxCalibrater,
    create_calibrator,
    load_tensors_data,
    save_tensors_data,
)

from models.datasets.arrays import FundusArrays
from models.nets import load_checkpoint
from server.distill.config import load_config
from server.export.calibration_cache import activation_tensors
from server.export.int8 import (
    QUANTIZED_OPS,
    CalibrationError,
    CalibrationReader,
    SelectionSet,
    calibrate_ranges,
    calibration_batch,
    check_calibration,
    quantizable_nodes,
    quantize_int8,
    quantize_qdq,
    quiet,
)
from server.export.onnx_export import INPUT_NAME, export_onnx
from server.export.scoring import predict_onnx, session
from server.training.data import load_splits


@pytest.fixture(scope="module")
def fp32_and_data(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, np.ndarray, SelectionSet]:
    model, meta = load_checkpoint(tiny_run / "student.json")
    path = export_onnx(model, meta.preprocess.size, tmp_path_factory.mktemp("m") / "m.onnx")
    cfg = load_config(tiny_run / "config.yaml")
    splits = load_splits(cfg.data, cfg.seed)
    calib = meta.preprocess.normalise(splits.train.images[:64])
    # label the selection images with fp32's own grades: any INT8 flip then costs accuracy
    val = splits.val.subset(slice(0, 96))
    own = predict_onnx(session(path, 1), val, meta.preprocess, 0.5).grade_logits.argmax(1)
    val = FundusArrays(val.images, own, np.ones(len(val), bool), val.site, val.patient)
    agreed = SelectionSet(val, meta.preprocess, 0.5)
    return path, calib, agreed


def test_qdq_is_symmetric_and_per_channel(
    fp32_and_data: tuple[Path, np.ndarray, SelectionSet], tmp_path: Path
) -> None:
    src, calib, _ = fp32_and_data
    dst = quantize_qdq(src, tmp_path / "q.onnx", calib, "MinMax")
    proto = onnx.load(str(dst))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    qnodes = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qnodes
    biases = {n.input[2] for n in proto.graph.node if n.op_type in ("Conv", "Gemm")}
    for node in qnodes:
        zero_point = inits[node.input[2]]
        assert not zero_point.any(), node.name
        # int8 everywhere but biases, which Q/DQ keeps as int32 (scale = input x weight scale)
        assert zero_point.dtype == (np.int32 if node.output[0] in biases else np.int8), node.name
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in proto.graph.node if n.output[0] == conv.input[1])
    channels = inits[weight_dq.input[0]].shape[0]
    assert inits[weight_dq.input[1]].shape == (channels,)  # one scale per output channel


def test_calibration_errors_name_the_source() -> None:
    good = np.zeros((40, 3, 32, 32), np.float32)
    check_calibration(good, 32, 32, "x.npz")
    with pytest.raises(CalibrationError, match=r"x\.npz has 8 images; at least 32"):
        check_calibration(good[:8], 32, 32, "x.npz")
    with pytest.raises(CalibrationError, match=r"x\.npz.*\(3, 16, 16\).*\(3, 32, 32\)"):
        check_calibration(np.zeros((40, 3, 16, 16), np.float32), 32, 32, "x.npz")


def test_fallback_keeps_sensitive_layers_in_float(
    fp32_and_data: tuple[Path, np.ndarray, SelectionSet], tmp_path: Path
) -> None:
    src, calib, select = fp32_and_data
    # calibrating on near-black images gives ranges far too narrow: INT8 loses accuracy
    bad = calib * 0.02
    nodes = quantizable_nodes(src)
    result = quantize_int8(
        src,
        tmp_path / "int8.onnx",
        bad,
        select,
        methods=["MinMax"],
        budget=0.0,
        max_excluded=len(nodes),
        sensitivity_samples=32,
        work=tmp_path,
    )
    assert result.fp32_accuracy == 100.0
    assert result.by_method["MinMax"] < 100.0  # the bad calibration hurt
    assert result.excluded, "the fallback should have kept some layers in float"
    assert result.accuracy > result.by_method["MinMax"]
    assert set(result.sensitivity) == set(nodes)
    assert list(result.sensitivity.values()) == sorted(result.sensitivity.values(), reverse=True)
    proto = onnx.load(str(result.path))
    by_name = {n.name: n for n in proto.graph.node}
    producers = {o: n for n in proto.graph.node for o in n.output}
    for name in result.excluded:  # an excluded layer reads its weight directly, unquantized
        weight = by_name[name].input[1]
        assert weight not in producers or producers[weight].op_type != "DequantizeLinear"


def test_calibration_steps_shrink_with_image_size() -> None:
    assert calibration_batch(np.zeros((64, 3, 64, 64), np.float32)) == 16
    assert calibration_batch(np.zeros((8, 3, 64, 64), np.float32)) == 8
    assert calibration_batch(np.zeros((64, 3, 224, 224), np.float32)) == 5
    assert calibration_batch(np.zeros((64, 3, 384, 384), np.float32)) == 1
    reader = CalibrationReader(np.zeros((40, 3, 32, 32), np.float32), batch_size=16)
    assert len(reader) == 2  # the short tail is dropped
    reader.set_range(start_index=1, end_index=2)
    assert reader.get_next() is not None and reader.get_next() is None


def test_calibration_holds_one_step_and_keeps_the_ranges(
    fp32_and_data: tuple[Path, np.ndarray, SelectionSet],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At clinical sizes ONNX Runtime's calibrators would hold every image's activations at
    once (gigabytes); Fovea feeds them a step of a few images at a time and the ranges merge
    to the same values as calibrating on everything at once."""
    src, calib, _ = fp32_and_data
    x = np.concatenate([calib] * 2)[:128]  # 32 px: steps of 16 images
    held: list[int] = []  # images whose activations one collect_data call holds
    collect = MinMaxCalibrater.collect_data

    def counting(self: MinMaxCalibrater, reader: CalibrationReader) -> None:
        fed: list[int] = []
        get_next = reader.get_next

        def next_batch() -> dict[str, np.ndarray] | None:
            batch = get_next()
            fed.extend([] if batch is None else [len(batch[INPUT_NAME])])
            return batch

        monkeypatch.setattr(reader, "get_next", next_batch)
        collect(self, reader)
        held.append(sum(fed))

    monkeypatch.setattr(MinMaxCalibrater, "collect_data", counting)
    streamed, whole = tmp_path / "streamed.json", tmp_path / "whole.json"
    quantize_qdq(src, tmp_path / "s.onnx", x, "MinMax", cache=streamed)
    assert held == [16] * 8
    with quiet():  # ONNX Runtime's own way: all at once
        calibrator = create_calibrator(src, None, str(tmp_path / "aug.onnx"))
        calibrator.collect_data(CalibrationReader(x, batch_size=len(x)))
        save_tensors_data(calibrator.compute_data(), whole)
    assert held[-1] == 128
    got, want = (json.loads(p.read_text()) for p in (streamed, whole))
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def test_calibration_ranges_every_activation_not_only_conv_gemm_matmul(
    fp32_and_data: tuple[Path, np.ndarray, SelectionSet], tmp_path: Path
) -> None:
    """TensorRT's implicit INT8 needs a range for Add, pooling, activations... too; ONNX
    Runtime's calibrator recorded only the inputs and outputs of the quantized op types."""
    src, calib, _ = fp32_and_data
    ranges = calibrate_ranges(src, calib, "MinMax", tmp_path / "ranges.json")
    names = set(load_tensors_data(ranges).data)
    needed = activation_tensors(onnx.load(str(src)))
    assert set(needed) <= names, sorted(set(needed) - names)
    proto = onnx.load(str(src))
    other = [n for n in proto.graph.node if n.op_type not in (*QUANTIZED_OPS, "Constant")]
    assert other and all(o in names for n in other for o in n.output if o)
    # the Q/DQ model is the one ONNX Runtime makes calibrating Conv/Gemm/MatMul alone
    ours = quantize_qdq(src, tmp_path / "ours.onnx", calib, "MinMax", cache=ranges)
    with quiet():
        quantize_static(
            str(src),
            str(tmp_path / "ort.onnx"),
            CalibrationReader(calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    a, b = (onnx.load(str(p)).graph for p in (ours, tmp_path / "ort.onnx"))
    assert [(n.op_type, list(n.input)) for n in a.node] == [
        (n.op_type, list(n.input)) for n in b.node
    ]
    assert {i.name: numpy_helper.to_array(i).tolist() for i in a.initializer} == {
        i.name: numpy_helper.to_array(i).tolist() for i in b.initializer
    }
