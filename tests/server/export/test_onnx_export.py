"""ONNX export: named I/O, dynamic batch, opset 17, and a TensorRT 8.5 lint that names nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from models.nets import build_model
from server.export.lint import lint_for_tensorrt85
from server.export.onnx_export import export_onnx
from server.export.scoring import session


def test_export_names_io_and_keeps_batch_dynamic(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet", {"width": 4, "depths": [1, 1]}).eval()
    path = export_onnx(model, 32, tmp_path / "m.onnx")
    assert not model.training  # the exporter must not leave the model in train mode
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["grade_logits", "gradable_logit"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    sess = session(path, 1)
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype(np.float32)
        grade, gradable = sess.run(None, {"images": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        assert grade.shape == (n, 5) and gradable.shape == (n, 1)
        np.testing.assert_allclose(grade, ref["grade_logits"].numpy(), atol=1e-4)
    assert not [i for i in lint_for_tensorrt85(proto) if i.severity == "error"]


def test_lint_names_unsupported_nodes_and_dynamic_dims() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", 8])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
        helper.make_node("Hardmax", ["r"], ["y"], name="the_hardmax"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    issues = lint_for_tensorrt85(model)
    errors = [i for i in issues if i.severity == "error"]
    assert [(i.node, "Hardmax" in i.message) for i in errors] == [("the_hardmax", True)]
    assert any(i.node == "x" and "dimension 2" in i.message for i in issues)
