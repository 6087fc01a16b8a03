"""Layer removal, channel pruning, fake quantisation and the step config, on tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from models.nets import build_model, count_parameters, load_checkpoint, save_checkpoint
from models.preprocess import PreprocessSpec
from server.compress.channels import prune_channels_
from server.compress.config import parse_compress_config
from server.compress.layers import removable_blocks, without_block
from server.compress.qat import export_qat_onnx, prepare_qat_, strip_qat_
from server.export.scoring import session
from server.training.settings import ConfigError

SPEC = PreprocessSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_removing_a_resnet_block_keeps_the_other_weights_and_matches_its_config() -> None:
    model = build_model("resnet", {"width": 4, "depths": [2, 1, 3]})
    assert removable_blocks(model) == [(0, 1), (2, 1), (2, 2)]
    smaller = without_block(model, (2, 1))
    assert smaller.config["depths"] == [2, 1, 2]
    assert _shapes(smaller) == _shapes(build_model("resnet", smaller.config))
    # the block after the removed one moved up with its weights
    assert torch.equal(smaller.stages[2][1].conv1[0].weight, model.stages[2][2].conv1[0].weight)
    assert count_parameters(smaller) < count_parameters(model)
    assert model.config["depths"] == [2, 1, 3]  # the input is untouched


def test_removing_a_vit_block_follows_per_block_heads() -> None:
    model = build_model(
        "vit", {"dim": 16, "depth": 3, "heads": [2, 1, 2], "head_dim": 8, "image_size": 32}
    )
    smaller = without_block(model, (0, 1))
    assert smaller.config["depth"] == 2 and smaller.config["heads"] == [2, 2]
    assert _shapes(smaller) == _shapes(build_model("vit", smaller.config))
    assert (
        removable_blocks(
            build_model("vit", {"dim": 16, "depth": 2, "heads": 2, "image_size": 32}), min_depth=2
        )
        == []
    )


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("resnet", {"width": 8, "depths": [1, 2]}),
        ("mobilenetv2", {"channels": [8, 16], "depths": [2, 2], "expand": 2, "stem": 8}),
        ("module:tinynets:make", {"kwargs": {"width": 8}, "image_size": 32}),  # your own CNN
    ],
)
def test_channel_pruning_shrinks_and_the_checkpoint_reloads(
    name: str, config: dict[str, object], tmp_path: Path, user_package: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(name, config).eval()
    before = count_parameters(model)
    prune_channels_(model, 0.5, 32)
    assert count_parameters(model) < 0.5 * before
    x = torch.randn(2, 3, 32, 32)
    want = model(x)["grade_logits"]
    save_checkpoint(model, tmp_path / "m", name="m", preprocess=SPEC)
    loaded, meta = load_checkpoint(tmp_path / "m.json")
    assert meta.resized
    assert torch.allclose(loaded(x)["grade_logits"], want, atol=1e-6)


def test_channel_pruning_refuses_attention() -> None:
    vit = build_model("vit", {"dim": 16, "depth": 1, "heads": 2, "image_size": 32})
    with pytest.raises(ValueError, match="channel pruning is for CNN students"):
        prune_channels_(vit, 0.5, 32)


def test_channel_pruning_keeps_the_largest_l1_filters() -> None:
    torch.manual_seed(0)
    model = build_model("resnet", {"width": 8, "depths": [1]}).eval()
    conv = model.stages[0][0].conv1[0]  # its output channels are not tied to a residual add
    norms = conv.weight.detach().abs().sum((1, 2, 3))
    keep = set(torch.argsort(norms, descending=True)[:4].tolist())
    kept_weights = {tuple(conv.weight[i].flatten()[:3].tolist()) for i in keep}
    prune_channels_(model, 0.5, 32)
    pruned = model.stages[0][0].conv1[0].weight
    assert pruned.shape[0] == 4
    assert {tuple(w.flatten()[:3].tolist()) for w in pruned} == kept_weights


def test_qat_exports_symmetric_qdq_that_matches_the_fake_quantised_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = prepare_qat_(build_model("resnet", {"width": 8, "depths": [1, 1]}))
    model.train()
    for _ in range(3):
        model(torch.randn(8, 3, 32, 32))
    model.eval()
    path = export_qat_onnx(model, 32, tmp_path / "q.onnx")
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "BatchNormalization" not in ops  # folded before quantising
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) == 3:
            zero = inits[node.input[2]]
            assert zero.dtype == np.int8 and not zero.any()
    assert any(v.dtype == np.int8 and v.ndim == 4 for v in inits.values())  # int8 conv weights
    x = torch.randn(4, 3, 32, 32)
    want = model(x)["grade_logits"].detach().numpy()
    got = session(path).run(["grade_logits"], {"images": x.numpy()})[0]
    assert np.abs(got - want).max() < 0.05 * max(np.abs(want).max(), 1e-3)
    strip_qat_(model)
    assert isinstance(model.stem[0], torch.nn.Conv2d)
    assert set(model.state_dict()) == set(build_model("resnet", model.config).state_dict())


def test_config_names_the_step_with_a_bad_key(tmp_path: Path) -> None:
    base = {"teacher": str(tmp_path / "t.json"), "out": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"step 2 \(prune_channels\)") as e:
        parse_compress_config(
            {
                **base,
                "steps": [
                    {"kind": "distill"},
                    {"kind": "prune_channels", "ratio": 0.5, "ratoi": 1},
                ],
            }
        )
    assert "ratoi" in str(e.value)
    with pytest.raises(ConfigError, match="unknown compression step kind 'shrink'"):
        parse_compress_config({**base, "steps": [{"kind": "shrink"}]})
    with pytest.raises(ConfigError, match="unique"):
        parse_compress_config({**base, "steps": [{"kind": "distill"}, {"kind": "distill"}]})
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_compress_config({**base, "steps": [{"kind": "prune_channels"}]})
    cfg = parse_compress_config({**base, "steps": [{"kind": "qat", "name": "final", "epochs": 1}]})
    assert cfg.steps[0].name == "final" and cfg.steps[0].settings.epochs == 1  # type: ignore[attr-defined]
