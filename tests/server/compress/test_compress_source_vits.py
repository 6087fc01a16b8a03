"""Layer reduction and head pruning of timm ViTs and Hugging Face image ViTs: smaller, rebuilt
from their checkpoints with identical outputs, exported to ONNX."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.nets import (
    SourceNet,
    build_model,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)
from models.preprocess import PreprocessSpec
from server.compress.heads import (
    HeadPruneConfig,
    attach_gates_,
    head_counts,
    prune_attention_heads_,
    prune_heads_,
)
from server.compress.layers import removable_blocks, without_block
from server.export.onnx_export import export_onnx
from server.training import TrainingData
from server.training.data import load_splits

SIZE = 32
TIMM_VIT = {"kwargs": {"img_size": SIZE, "patch_size": 8, "depth": 4}, "image_size": SIZE}
has_transformers = importlib.util.find_spec("transformers") is not None
needs_hf = pytest.mark.skipif(not has_transformers, reason="transformers not installed (hf extra)")


def _hf(hf_config: dict[str, Any], **config: Any) -> SourceNet:
    torch.manual_seed(0)
    model = build_model("hf", {"config": hf_config, **config})
    assert isinstance(model, SourceNet)
    return model.eval()


def _timm(**config: Any) -> SourceNet:
    torch.manual_seed(0)
    model = build_model("timm:vit_tiny_patch16_224", {**TIMM_VIT, **config})
    assert isinstance(model, SourceNet)
    return model.eval()


def _shrink_and_round_trip(model: SourceNet, keep: list[list[int]], tmp_path: Path) -> SourceNet:
    """Drop block 1, prune to ``keep``; the checkpoint gives the same outputs, ONNX runs."""
    sizes = [count_parameters(model)]
    assert removable_blocks(model) == [(0, b) for b in range(4)]
    smaller = without_block(model, (0, 1))
    sizes.append(count_parameters(smaller))
    assert count_parameters(model) == sizes[0]  # the input model is untouched
    prune_heads_(smaller, keep)
    sizes.append(count_parameters(smaller))
    assert sizes[0] > sizes[1] > sizes[2], sizes
    assert head_counts(smaller) == smaller.config["heads"] == [len(k) for k in keep]
    # the rebuilt model has the same shapes and taps, so the weights load without resizing
    rebuilt = build_model(smaller.family, smaller.config)
    assert count_parameters(rebuilt) == sizes[2]
    assert rebuilt.tap_names == smaller.tap_names
    x = torch.randn(2, 3, SIZE, SIZE)
    spec = PreprocessSpec.fitted(np.zeros((2, SIZE, SIZE, 3), np.uint8))
    path = save_checkpoint(smaller, tmp_path / "small", name="small", preprocess=spec)
    loaded, meta = load_checkpoint(path)
    assert not meta.resized and meta.parameters == sizes[2]
    with torch.no_grad():
        (a, a_taps), (b, b_taps) = smaller.eval().forward_taps(x), loaded.forward_taps(x)
    assert torch.equal(a["grade_logits"], b["grade_logits"])
    assert all(torch.equal(a_taps[k], b_taps[k]) for k in a_taps)
    ort = pytest.importorskip("onnxruntime")
    onnx_path = export_onnx(loaded, SIZE, tmp_path / "small.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["grade_logits"], {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, a["grade_logits"].numpy(), atol=1e-4, rtol=1e-4)
    print(f"{model.family} parameters: {' -> '.join(f'{n:,}' for n in sizes)}")
    return smaller


@needs_hf
def test_hf_vit_loses_a_block_and_heads_and_round_trips(
    hf_vit_config: dict[str, Any], tmp_path: Path
) -> None:
    model = _hf(hf_vit_config)
    assert model.tap_names == ("layers.0", "layers.1", "layers.2", "layers.3")
    smaller = _shrink_and_round_trip(model, [[0, 2], [1], [0, 1, 3]], tmp_path)
    assert smaller.config["config"]["num_hidden_layers"] == 3
    assert smaller.tap_names == ("layers.0", "layers.1", "layers.2")  # auto taps, re-derived
    assert smaller.backbone.layers[0].attention.q_proj.weight.shape == (16, 32)  # 2 heads x 8


@needs_hf
def test_hf_named_taps_follow_the_renumbered_blocks(hf_vit_config: dict[str, Any]) -> None:
    model = _hf(hf_vit_config, taps=["layers.1", "layers.3.mlp"])
    first = without_block(model, (0, 1))
    assert first.config["taps"] == ["layers.0", "layers.2.mlp"]  # removed -> the one before
    assert without_block(model, (0, 0)).config["taps"] == ["layers.0", "layers.2.mlp"]
    assert build_model("hf", first.config).tap_names == first.tap_names
    assert removable_blocks(without_block(first, (0, 0)), min_depth=2) == []


@pytest.fixture(scope="module")
def data(tiny_data: Path, distill_config: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = distill_config(tiny_data, None, tmp_path_factory.mktemp("h"))
    splits = load_splits(cfg.data, 0)
    return TrainingData(PreprocessSpec.fitted(splits.train.images), splits.train, splits.val)


@needs_hf
def test_hf_vit_heads_are_scored_and_pruned_by_the_step_machinery(
    data: Any, distill_config: Any, hf_vit_config: dict[str, Any], tmp_path: Path
) -> None:
    cfg = distill_config(Path("unused"), None, tmp_path, train={"epochs": 1, "batch_size": 32})
    model = _hf(hf_vit_config)
    prune = HeadPruneConfig(keep_ratio=0.5, method="gradient", importance_batches=2)
    outcome = prune_attention_heads_(model, None, data, cfg, prune)
    assert outcome.heads_before == [4, 4, 4, 4] and sum(outcome.heads_after) == 8
    assert outcome.parameters_after < outcome.parameters_before
    assert model.config["heads"] == outcome.heads_after
    rebuilt = build_model("hf", model.config)
    rebuilt.load_state_dict(model.state_dict())  # the config alone gives the pruned shapes


@needs_hf
def test_hf_vit_runs_the_prune_heads_and_reduce_layers_steps(
    data: Any, distill_config: Any, hf_vit_config: dict[str, Any], tmp_path: Path
) -> None:
    from server.compress.steps import StepContext, run_step

    train = {"epochs": 1, "batch_size": 32, "threads": 1}
    cfg = distill_config(Path("unused"), None, tmp_path, train=train, monitor={"enabled": False})
    ctx = StepContext(data=data, teacher=None, distill=cfg, out_dir=tmp_path, log=lambda s: None)
    settings = {"keep_ratio": 0.5, "gate_epochs": 1, "recover_epochs": 1}  # gates, then recovery
    pruned = run_step("prune_heads", _hf(hf_vit_config), ctx, settings).model
    assert sum(pruned.config["heads"]) == 8 and len(pruned.config["heads"]) == 4
    settings = {"max_removals": 1, "epochs": 1, "min_retention": 0.01, "latency_runs": 0}
    result = run_step("reduce_layers", pruned, ctx, {**settings, "choice_images": 16})
    assert result.details["removed"][0]["accepted"]
    assert result.model.config["config"]["num_hidden_layers"] == 3
    assert len(result.model.config["heads"]) == 3
    assert count_parameters(result.model) < count_parameters(pruned)
    build_model("hf", result.model.config).load_state_dict(result.model.state_dict())


def _gates_match_slicing(model: SourceNet) -> None:
    """Zeroing a head's gate computes what cutting it out computes."""
    keep = [[0], [1, 2], [2], [0, 1, 2]]
    gated = copy.deepcopy(model)
    gates = attach_gates_(gated)
    with torch.no_grad():
        for g, k in zip(gates.values, keep, strict=True):
            g.copy_(torch.tensor([1.0 if i in k else 0.0 for i in range(len(g))]))
    x = torch.randn(2, 3, SIZE, SIZE)
    prune_heads_(model, keep)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["grade_logits"], gated(x)["grade_logits"])


def test_timm_vit_loses_a_block_and_heads_and_round_trips(
    need: Callable[[str], None], tmp_path: Path
) -> None:
    need("timm")
    model = _timm()
    assert head_counts(model) == [3, 3, 3, 3]  # vit_tiny: 192 wide, 3 heads of 64
    smaller = _shrink_and_round_trip(model, [[0, 2], [1], [0, 1, 2]], tmp_path)
    assert smaller.config["kwargs"]["depth"] == 3
    attn = smaller.backbone.blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.weight.shape == (3 * 128, 192)


def test_timm_vit_named_taps_and_gates(need: Callable[[str], None]) -> None:
    need("timm")
    model = _timm(taps=["blocks.0", "blocks.2.mlp"])
    smaller = without_block(model, (0, 0))
    assert smaller.config["taps"] == ["blocks.0", "blocks.1.mlp"]
    assert build_model("timm", smaller.config).tap_names == smaller.tap_names
    _gates_match_slicing(_timm())
