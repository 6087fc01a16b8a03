"""Attention-head pruning: sliced, rebuildable, exportable, and scored by gates or gradients."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.nets import build_model, count_parameters, load_checkpoint, save_checkpoint
from models.preprocess import PreprocessSpec
from server.compress.heads import (
    HeadPruneConfig,
    attach_gates_,
    detach_gates_,
    gate_importance,
    gradient_importance,
    head_counts,
    prune_heads_,
    select_heads,
)
from server.training import TrainingData
from server.training.data import load_splits

VIT = {"dim": 32, "depth": 2, "heads": 4, "patch": 8, "image_size": 32, "dropout": 0.0}


def _vit() -> Any:
    torch.manual_seed(0)
    return build_model("vit", VIT).eval()


@pytest.fixture(scope="module")
def data(tiny_data: Path, distill_config: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = distill_config(tiny_data, None, tmp_path_factory.mktemp("h"))
    splits = load_splits(cfg.data, 0)
    return TrainingData(PreprocessSpec.fitted(splits.train.images), splits.train, splits.val)


def test_pruning_slices_heads_and_matches_zeroed_gates(tmp_path: Path) -> None:
    model = _vit()
    x = torch.randn(3, 3, 32, 32)
    keep = [[0, 2], [3]]
    gated = copy.deepcopy(model)
    gates = attach_gates_(gated)
    with torch.no_grad():
        for g, k in zip(gates.values, keep, strict=True):
            g.copy_(torch.tensor([1.0 if i in k else 0.0 for i in range(4)]))
        expected = gated(x)["grade_logits"]
    before = count_parameters(model)
    prune_heads_(model, keep)
    assert head_counts(model) == [2, 1]
    assert model.blocks[0].attn.q.weight.shape == (16, 32)  # 2 heads x 8 wide
    assert model.blocks[1].attn.out.weight.shape == (32, 8)
    assert count_parameters(model) < before
    with torch.no_grad():
        torch.testing.assert_close(model(x)["grade_logits"], expected, atol=1e-5, rtol=1e-5)
    # the checkpoint JSON rebuilds the smaller model
    spec = PreprocessSpec.fitted(np.zeros((2, 32, 32, 3), np.uint8))
    path = save_checkpoint(model, tmp_path / "pruned", name="pruned", preprocess=spec)
    again, meta = load_checkpoint(path)
    assert meta.config["heads"] == [2, 1] and meta.config["head_dim"] == 8
    with torch.no_grad():
        torch.testing.assert_close(again(x)["grade_logits"], expected, atol=1e-5, rtol=1e-5)


def test_pruned_model_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = prune_heads_(_vit(), [[1], [0, 1, 3]])
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["grade_logits", "gradable_logit"],
        dynamic_axes={"image": {0: "batch"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x5 = torch.randn(5, 3, 32, 32)
    got = session.run(None, {"image": x5.numpy()})
    with torch.no_grad():
        want = model(x5)
    np.testing.assert_allclose(got[0], want["grade_logits"].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got[1], want["gradable_logit"].numpy(), atol=1e-4, rtol=1e-4)


def test_detaching_gates_folds_them_into_the_output_projection() -> None:
    model = _vit()
    gates = attach_gates_(model)
    with torch.no_grad():
        for g in gates.values:
            g.copy_(torch.rand(4))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        gated = model(x)["grade_logits"]
    detach_gates_(model, fold=True)
    assert not hasattr(model, "head_gates")
    assert set(model.state_dict()) == set(_vit().state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x)["grade_logits"], gated, atol=1e-5, rtol=1e-5)


def test_select_heads_keeps_the_ratio_and_one_head_per_block() -> None:
    imp = [torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0.01, 0.02, 0.0, 0.03])]
    keep = select_heads(imp, 0.5)
    assert keep == [[0, 1, 2], [3]]  # 4 of 8 overall; block 2 keeps its best head
    assert sum(map(len, select_heads(imp, 0.6))) == 5
    assert select_heads(imp, 1.0) == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_bad_keep_lists_and_head_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="bad heads"):
        prune_heads_(_vit(), [[0, 4], [1]])
    with pytest.raises(ValueError, match="keep lists"):
        prune_heads_(_vit(), [[0]])
    with pytest.raises(ValueError, match="head_dim"):
        build_model("vit", {**VIT, "heads": [2, 1]})
    with pytest.raises(ValueError, match="keep_ratio"):
        HeadPruneConfig(keep_ratio=0)
    with pytest.raises(ValueError, match="no multi-head attention"):
        attach_gates_(build_model("resnet", {"width": 4, "depths": [1]}))
    # the presets (int heads, no head_dim) build as before
    assert build_model("vit-student").config["heads"] == 4
    assert "head_dim" not in build_model("vit-student").config


def test_l1_gates_shrink_during_distillation(
    data: Any, distill_config: Any, tmp_path: Path
) -> None:
    cfg = distill_config(
        Path("unused"), None, tmp_path, train={"epochs": 1, "batch_size": 32, "threads": 1}
    )
    cfg = cfg.model_copy(update={"monitor": cfg.monitor.model_copy(update={"enabled": False})})
    model = build_model("vit", VIT)
    imp = gate_importance(model, None, data, cfg, HeadPruneConfig(l1=0.05))
    values = torch.cat(imp)
    assert values.shape == (8,) and float(values.max()) < 1.0  # L1 pulled every gate down
    assert not hasattr(model, "head_gates")


def test_gradient_importance_is_normalised_per_block(
    data: Any, distill_config: Any, tmp_path: Path
) -> None:
    cfg = distill_config(Path("unused"), None, tmp_path)
    imp = gradient_importance(build_model("vit", VIT), None, data, cfg, batches=2)
    assert [len(v) for v in imp] == [4, 4]
    for v in imp:
        assert torch.isfinite(v).all() and float(v.norm()) == pytest.approx(1.0, abs=1e-4)


def test_prune_heads_step_prunes_and_recovers(
    data: Any, tiny_teacher: Path, distill_config: Any, tmp_path: Path
) -> None:
    from server.compress.steps import StepContext, run_step

    cfg = distill_config(
        Path("unused"),
        tiny_teacher,
        tmp_path,
        train={"epochs": 1, "batch_size": 32, "threads": 1},
        monitor={"enabled": False},
    )
    teacher = load_checkpoint(tiny_teacher)[0]
    ctx = StepContext(data=data, teacher=teacher, distill=cfg, out_dir=tmp_path, log=lambda s: None)
    model = build_model("vit", VIT)
    settings = {"keep_ratio": 0.5, "gate_epochs": 1, "recover_epochs": 1}
    result = run_step("prune_heads", model, ctx, settings)
    assert (
        head_counts(result.model) == [len(k) for k in result.details["kept"]]
        and sum(head_counts(result.model)) == 4
    )
    assert result.details["parameters_after"] < result.details["parameters_before"]
    assert set(result.details["val_accuracy"]) == {"before", "pruned", "recovered"}
    assert result.metrics["accuracy"] == result.details["val_accuracy"]["recovered"]
