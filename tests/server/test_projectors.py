import pytest
import torch

from models.nets import build_model
from server.distill.projectors import FeatureAligner, auto_layer_map


def test_auto_map_pairs_deepest_taps_by_relative_depth() -> None:
    s = build_model("resnet-student").tap_channels(64)
    t = build_model("vit-teacher").tap_channels(64)
    mapping = auto_layer_map(s, t, 2)
    assert mapping == {"stage3": "block6", "stage4": "block8"}


def test_projector_maps_student_shape_to_teacher_shape() -> None:
    student, teacher = build_model("resnet-student"), build_model("resnet-teacher")
    s_taps, t_taps = student.tap_channels(64), teacher.tap_channels(64)
    aligner = FeatureAligner({"stage2": "stage3", "stage4": "stage4"}, s_taps, t_taps)
    _, st = student.forward_taps(torch.randn(4, 3, 64, 64))
    _, tt = teacher.forward_taps(torch.randn(4, 3, 64, 64))
    proj = aligner.project(st)
    assert proj["stage3"].shape == tt["stage3"].shape
    assert proj["stage4"].shape == tt["stage4"].shape
    # the projectors can learn the mapping: a few steps on fixed features cut the loss
    st = {k: v.detach() for k, v in st.items()}
    tt = {k: v.detach() for k, v in tt.items()}
    opt = torch.optim.Adam(aligner.parameters(), lr=0.05)
    first = aligner.loss(st, tt).item()
    for _ in range(40):
        opt.zero_grad()
        loss = aligner.loss(st, tt)
        loss.backward()
        opt.step()
    assert aligner.loss(st, tt).item() < 0.5 * first


def test_cosine_loss_is_zero_for_aligned_features() -> None:
    s_taps = {"a": (4, 2, 2)}
    aligner = FeatureAligner({"a": "b"}, s_taps, {"b": (4, 2, 2)}).eval()
    x = torch.randn(3, 4, 2, 2)
    target = aligner.project({"a": x})["b"].detach()
    assert aligner.loss({"a": x}, {"b": target}).item() == pytest.approx(0.0, abs=1e-5)


def test_layer_map_with_unknown_tap_is_named() -> None:
    s = build_model("resnet-student").tap_channels(64)
    t = build_model("resnet-teacher").tap_channels(64)
    with pytest.raises(ValueError, match="student tap 'stage9'"):
        FeatureAligner({"stage9": "stage4"}, s, t)
    with pytest.raises(ValueError, match="teacher tap 'block1'"):
        FeatureAligner({"stage4": "block1"}, s, t)
