"""What a batch and an output of any module may be, and masked feature losses."""

from __future__ import annotations

import pytest
import torch

from server.distill.batches import as_feature_map, pick_logits, position_masks, split_batch
from server.distill.projectors import FeatureAligner


def test_batches_split_into_inputs_and_targets() -> None:
    x, y = torch.zeros(2, 3), torch.tensor([0, 1])
    assert split_batch(x, "labels") == (x, None)
    inputs, target = split_batch({"input_ids": x, "labels": y}, "labels")
    assert list(inputs) == ["input_ids"] and target is y  # labels never reach the model
    assert split_batch((x, y), "labels") == (x, y)
    with pytest.raises(ValueError, match="3 items"):
        split_batch((x, y, y), "labels")
    with pytest.raises(TypeError, match="not tensors"):
        split_batch({"input_ids": [1, 2]}, "labels")


def test_logits_are_found_in_any_output() -> None:
    transformers = pytest.importorskip("transformers")
    logits, hidden = torch.randn(2, 3), torch.randn(2, 4, 8)
    hf = transformers.modeling_outputs.SequenceClassifierOutput(logits=logits)
    assert pick_logits(hf, None) is logits
    assert pick_logits({"hidden": hidden, "scores": logits}, "scores") is logits
    assert pick_logits({"hidden": hidden}, None) is hidden  # the first tensor
    assert pick_logits(logits, None) is logits
    with pytest.raises(KeyError, match="among the outputs"):
        pick_logits({"hidden": hidden}, "logits")


def test_tokens_become_per_token_maps_and_padding_is_ignored() -> None:
    tokens = torch.randn(2, 5, 8)
    assert as_feature_map(tokens).shape == (2, 8, 5, 1)
    assert as_feature_map(torch.randn(2, 8)).shape == (2, 8, 1, 1)
    assert as_feature_map(torch.zeros(2, 5, dtype=torch.long)) is None
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    teacher = {"t": as_feature_map(tokens)}
    masks = position_masks({"attention_mask": mask}, "attention_mask", teacher)
    assert masks is not None and masks["t"].shape == (2, 1, 5, 1)
    aligner = FeatureAligner({"s": "t"}, {"s": (4, 5, 1)}, {"t": (8, 5, 1)}).eval()
    student = {"s": torch.randn(2, 4, 5, 1)}
    before = aligner.loss(student, teacher, masks)
    noisy = teacher["t"].clone()
    noisy[0, :, 3:] += 100.0  # only the padded positions change
    assert aligner.loss(student, {"t": noisy}, masks).item() == pytest.approx(before.item())
    assert aligner.loss(student, {"t": noisy}).item() != pytest.approx(before.item())
    # another sequence length than the projector was made for: it follows the teacher
    longer = {"t": torch.randn(2, 8, 9, 1)}
    assert aligner.project({"s": torch.randn(2, 4, 9, 1)}, longer)["t"].shape == (2, 8, 9, 1)
