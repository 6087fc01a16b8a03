import json
import math
from pathlib import Path

import pytest
import torch

from models.nets import PRESETS, build_model, count_parameters, load_checkpoint, save_checkpoint
from models.preprocess import PreprocessSpec


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_give_two_named_outputs_and_taps(name: str) -> None:
    model = build_model(name).eval()
    out, taps = model.forward_taps(torch.zeros(2, 3, 64, 64))
    assert out["grade_logits"].shape == (2, 5)
    assert out["gradable_logit"].shape == (2, 1)
    assert list(taps) == list(model.tap_names)
    assert all(t.ndim == 4 and t.shape[0] == 2 for t in taps.values())


def test_students_are_at_most_a_tenth_of_the_teacher() -> None:
    teacher = count_parameters(build_model("resnet-teacher"))
    for student in ("resnet-student", "mobilenetv2-student", "vit-student"):
        assert count_parameters(build_model(student)) <= teacher / 10


def test_registry_names_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnot'"):
        build_model("resnot")
    with pytest.raises(ValueError, match="bad config for model family 'resnet'"):
        build_model("resnet", {"widht": 8})
    with pytest.raises(ValueError, match="divisible"):
        build_model("vit", {"dim": 30, "heads": 4})


@pytest.mark.parametrize("name", ["resnet-student", "mobilenetv2-student", "vit-student"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model(name).eval()
    spec = PreprocessSpec(size=64)
    path = save_checkpoint(model, tmp_path / "m", name="m", preprocess=spec)
    meta = json.loads(path.read_text())
    assert meta["schema_version"] == 1 and meta["family"] == model.family
    assert (tmp_path / "m.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\n"  # not a pickle
    loaded, info = load_checkpoint(path)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a["grade_logits"], b["grade_logits"])
    assert info.preprocess == spec and info.generation == 0


def test_checkpoint_with_wrong_weights_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = save_checkpoint(
        build_model("resnet-student"), tmp_path / "m", name="m", preprocess=PreprocessSpec()
    )
    meta = json.loads(path.read_text())
    meta["config"]["width"] = 16
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit"):
        load_checkpoint(path)


def test_an_undefined_metric_survives_the_json_round_trip(tmp_path: Path) -> None:
    """A validation split without referable cases has no sensitivity (NaN), written as null."""
    model = build_model("resnet-student")
    path = save_checkpoint(
        model, tmp_path / "m", name="m", preprocess=PreprocessSpec(size=32),
        metrics={"accuracy": 0.5, "referable_sensitivity": float("nan")},
    )  # fmt: skip
    _, meta = load_checkpoint(path)
    assert meta.metrics["accuracy"] == 0.5
    assert math.isnan(meta.metrics["referable_sensitivity"])
