"""fp16: float32 inputs and outputs kept, fp16 weights, clamped weights named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto

from models.nets import build_model
from server.export.fp16 import convert_fp16
from server.export.onnx_export import export_onnx
from server.export.scoring import session


def test_fp16_keeps_float32_io_and_names_clamped_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet", {"width": 4, "depths": [1, 1]}).eval()
    with torch.no_grad():
        model.head.bias[0] = 1e5  # beyond what onnxconverter-common keeps
    src = export_onnx(model, 32, tmp_path / "m.onnx")
    result = convert_fp16(src, tmp_path / "m16.onnx")
    proto = onnx.load(str(result.path))
    assert all(
        v.type.tensor_type.elem_type == TensorProto.FLOAT
        for v in [*proto.graph.input, *proto.graph.output]
    )
    conv_weights = [i for i in proto.graph.initializer if len(i.dims) == 4]
    assert conv_weights and all(i.data_type == TensorProto.FLOAT16 for i in conv_weights)
    assert any("clamped" in line for line in result.clamped)
    assert any("truncated" in w for w in result.warnings)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = session(result.path, 1).run(None, {"images": x})[0]
    assert got.dtype == np.float32 and got.shape == (2, 5)
