"""export_module_onnx: a layer-reduced, head-pruned BERT with token inputs to ONNX, with dynamic
batch and sequence, matching PyTorch in ONNX Runtime; a plain tensor-input module beside it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from server.compress import drop_encoder_layers, slice_encoder_heads_
from server.export import ExportError, export_module_onnx, session


def _tokens(n: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, length // 2 :] = 0  # a padded row
    return {"input_ids": torch.randint(0, 100, (n, length), generator=g), "attention_mask": mask}


def test_pruned_bert_exports_with_parity(
    tiny_bert: Callable[..., nn.Module], tmp_path: Path
) -> None:
    model = slice_encoder_heads_(drop_encoder_layers(tiny_bert(4), 2), [[1, 2], [0]]).eval()
    out = export_module_onnx(model, _tokens(2, 16, 0), tmp_path / "student.onnx")
    assert out.inputs == ["input_ids", "attention_mask"] and out.outputs == ["logits"]
    assert out.parity.passed and out.parity.max_abs_error < 1e-4, out.parity.describe()
    sess = session(out.path)
    assert [i.shape for i in sess.get_inputs()] == [["batch", "sequence"]] * 2
    # another batch size and sequence length than the export was traced with
    other = _tokens(5, 9, 1)
    (got,) = sess.run(["logits"], {k: v.numpy() for k, v in other.items()})
    with torch.no_grad():
        expected = model(**other).logits.numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_bare_encoder_outputs_keep_their_names(
    tiny_bert: Callable[..., nn.Module], tmp_path: Path
) -> None:
    model = tiny_bert(2, classify=False)
    out = export_module_onnx(model, _tokens(2, 16, 0), tmp_path / "encoder.onnx")
    assert out.outputs == ["last_hidden_state", "pooler_output"] and out.parity.passed
    shapes = {o.name: o.shape for o in session(out.path).get_outputs()}
    assert shapes["last_hidden_state"] == ["batch", "sequence", 32]
    only = export_module_onnx(
        model, _tokens(2, 16, 0), tmp_path / "e.onnx", outputs=["pooler_output"]
    )
    assert only.outputs == ["pooler_output"]
    with pytest.raises(ExportError, match="'logits'"):
        export_module_onnx(model, _tokens(2, 16, 0), tmp_path / "x.onnx", outputs=["logits"])


def test_tensor_input_module_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    out = export_module_onnx(mlp, torch.randn(4, 8), tmp_path / "mlp.onnx")
    assert out.inputs == ["input"] and out.outputs == ["output"] and out.parity.passed
    x = torch.randn(7, 8)
    (got,) = session(out.path).run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert np.abs(got - mlp(x).numpy()).max() < 1e-5
