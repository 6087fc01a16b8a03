"""Backbones from elsewhere: built, tapped, saved and reloaded with identical outputs."""

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from models.nets import (
    SourceNet,
    WeightsError,
    build_model,
    load_checkpoint,
    load_weights_,
    save_checkpoint,
)
from models.preprocess import PreprocessSpec
from models.sources import SourceError

SIZE = 32
HF_CNNS = {
    "resnet": {"embedding_size": 8, "hidden_sizes": [8, 16, 16, 32], "depths": [1, 1, 1, 1]},
    "convnext": {"hidden_sizes": [8, 16, 16, 32], "depths": [1, 1, 1, 1]},
}
has_transformers = importlib.util.find_spec("transformers") is not None


@pytest.fixture
def user_module(user_package: Path) -> str:
    """The name of the user's package (see ``user_package`` in conftest)."""
    return "tinynets"


def _round_trip(model: SourceNet, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    out, taps = model.forward_taps(x)
    assert out["grade_logits"].shape == (2, 5) and out["gradable_logit"].shape == (2, 1)
    assert list(taps) == list(model.tap_names) and taps
    assert all(t.ndim == 4 and t.shape[0] == 2 for t in taps.values())
    path = save_checkpoint(model, tmp_path / "m", name="m", preprocess=PreprocessSpec(size=SIZE))
    assert json.loads(path.read_text())["family"] == model.family
    loaded, _ = load_checkpoint(path)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a["grade_logits"], b["grade_logits"])
    assert torch.equal(a["gradable_logit"], b["gradable_logit"])


def test_a_user_module_builds_taps_and_round_trips(user_module: str, tmp_path: Path) -> None:
    model = build_model(f"module:{user_module}:make", {"kwargs": {"width": 4}})
    assert model.family == "module" and model.embed_dim == 8
    assert model.tap_names == ("0.0", "0.1", "0.2")  # the three blocks, by hooks
    _round_trip(model, tmp_path)


def test_named_taps_and_a_wrong_tap_name(user_module: str) -> None:
    model = build_model(f"module:{user_module}:make", {"taps": ["0.2"]})
    assert model.tap_names == ("0.2",)
    with pytest.raises(SourceError, match=r"tap 'body\.9' is not a module"):
        build_model(f"module:{user_module}:make", {"taps": ["body.9"]})


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("nowhere_pkg.nets:make", "cannot import 'nowhere_pkg.nets'.*PYTHONPATH"),
        ("{pkg}:maek", "has no callable 'maek'; its public callables: make, not_a_module"),
        ("{pkg}:not_a_module", "returned int, not an nn.Module"),
    ],
)
def test_a_bad_module_or_factory_is_one_clear_message(
    user_module: str, factory: str, message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        build_model("module:" + factory.format(pkg=user_module))


def test_a_bad_factory_argument_is_named(user_module: str) -> None:
    with pytest.raises(SourceError, match="calling make"):
        build_model(f"module:{user_module}:make", {"kwargs": {"widht": 4}})


@pytest.mark.skipif(not has_transformers, reason="transformers not installed (the hf extra)")
def test_a_hf_vit_gives_token_taps_as_grids(tmp_path: Path, hf_vit_config: dict[str, Any]) -> None:
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps(hf_vit_config))
    model = build_model(f"hf:{tmp_path / 'vit'}")
    assert model.family == "hf" and len(model.tap_names) == 4
    assert set(model.tap_channels(SIZE).values()) == {(32, 4, 4)}  # 16 patches + class token
    _round_trip(model, tmp_path)


@pytest.mark.skipif(not has_transformers, reason="transformers not installed (the hf extra)")
@pytest.mark.parametrize("model_type", sorted(HF_CNNS))
def test_hf_cnns_tap_their_stages(tmp_path: Path, model_type: str) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model_type": model_type, **HF_CNNS[model_type]}))
    model = build_model(f"hf:{config}", {"image_size": SIZE})
    assert model.tap_names == tuple(f"encoder.stages.{i}" for i in range(4))
    _round_trip(model, tmp_path)


@pytest.mark.skipif(not has_transformers, reason="transformers not installed (the hf extra)")
def test_hf_refuses_what_it_would_have_to_download(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="local config only"):
        build_model("hf:google/vit-base-patch16-224")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(SourceError, match="has no model_type"):
        build_model(f"hf:{tmp_path / 'c.json'}")


def test_timm_builds_and_round_trips(need: Callable[[str], None], tmp_path: Path) -> None:
    need("timm")
    _round_trip(build_model("timm:resnet18", {"image_size": SIZE}), tmp_path)


def test_torchvision_builds_and_round_trips(need: Callable[[str], None], tmp_path: Path) -> None:
    need("torchvision")
    model = build_model("torchvision:resnet18", {"image_size": SIZE})
    assert model.tap_names == ("layer1", "layer2", "layer3", "layer4")
    _round_trip(model, tmp_path)


def test_a_broken_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # importing it raises ImportError
    with pytest.raises(SourceError, match=r"timm cannot be imported.*install the timm extra"):
        build_model("timm", {"name": "resnet18"})


def test_backbone_weights_load_under_a_prefix_and_leftovers_are_listed(
    user_module: str, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    source = build_model(f"module:{user_module}:make")
    backbone = {f"encoder.{k}": v for k, v in source.backbone.state_dict().items()}
    backbone["encoder.extra.weight"] = torch.zeros(3)
    save_file(backbone, str(tmp_path / "w.safetensors"))
    torch.manual_seed(2)
    model = build_model(f"module:{user_module}:make")
    report = load_weights_(model, tmp_path / "w.safetensors")
    assert torch.equal(model.backbone[0][0][0].weight, source.backbone[0][0][0].weight)
    assert report.missing == ["head.weight", "head.bias"]
    assert report.unexpected == ["encoder.extra.weight"]
    torch.save(source.state_dict(), tmp_path / "w.pth")  # a whole network, read weights_only
    assert load_weights_(model, tmp_path / "w.pth").missing == []


def test_weights_with_wrong_keys_or_shapes_are_refused(user_module: str, tmp_path: Path) -> None:
    model = build_model(f"module:{user_module}:make")
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "a.safetensors"))
    with pytest.raises(WeightsError, match=r"none of its 1 tensors fit.*fc\.weight"):
        load_weights_(model, tmp_path / "a.safetensors")
    save_file({"head.weight": torch.zeros(6, 3)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(WeightsError, match=r"wrong shape.*head.weight \(6, 3\) vs \(6, 16\)"):
        load_weights_(model, tmp_path / "b.safetensors")
    (tmp_path / "c.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_weights_(model, tmp_path / "c.pth")
