"""Hugging Face BERT-like encoders: fewer layers, fewer heads, physically smaller, still running,
and recovered by distillation through the Python API."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from models.nets import count_parameters
from server.compress import (
    HeadPruneConfig,
    drop_encoder_layers,
    encoder_head_counts,
    prune_encoder_heads_,
    slice_encoder_heads_,
)
from server.distill import ModuleDistillConfig, distill_module


def _inputs(n: int = 3, length: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return {"input_ids": torch.randint(0, 100, (n, length), generator=g), "attention_mask": mask}


def test_dropping_layers_keeps_a_smaller_working_copy(tiny_bert: Callable[..., nn.Module]) -> None:
    model = tiny_bert(4).eval()
    layers = model.bert.encoder.layer
    per_layer = count_parameters(layers[0])
    smaller = drop_encoder_layers(model, 2)  # even relative depths: layers 1 and 3
    assert len(smaller.bert.encoder.layer) == 2 and smaller.config.num_hidden_layers == 2
    assert len(model.bert.encoder.layer) == 4 and model.config.num_hidden_layers == 4
    assert count_parameters(smaller) == count_parameters(model) - 2 * per_layer
    for new, old in zip(smaller.bert.encoder.layer, (layers[1], layers[3]), strict=True):
        torch.testing.assert_close(new.output.dense.weight, old.output.dense.weight)
        assert new.attention.self.layer_idx == list(smaller.bert.encoder.layer).index(new)
    out = smaller(**_inputs(), output_hidden_states=True)
    assert out.logits.shape == (3, 2) and len(out.hidden_states) == 3
    assert len(drop_encoder_layers(model, [0, 3]).bert.encoder.layer) == 2
    with pytest.raises(ValueError, match="cannot keep layers"):
        drop_encoder_layers(model, [1, 4])
    with pytest.raises(ValueError, match="encoder layer list"):
        drop_encoder_layers(nn.Linear(2, 2), 1)


def test_slicing_heads_equals_silencing_them(tiny_bert: Callable[..., nn.Module]) -> None:
    model = tiny_bert(2).eval()
    keep = [[0, 2], [3]]
    silenced = copy.deepcopy(model)
    with torch.no_grad():  # a head's output reaches the model only through its dense columns
        for layer, heads in zip(silenced.bert.encoder.layer, keep, strict=True):
            for h in set(range(4)) - set(heads):
                layer.attention.output.dense.weight[:, h * 8 : (h + 1) * 8] = 0
        expected = silenced(**_inputs()).logits
    before = count_parameters(model)
    slice_encoder_heads_(model, keep)
    attn = model.bert.encoder.layer[0].attention
    assert encoder_head_counts(model) == [2, 1]
    assert attn.self.query.weight.shape == (16, 32) and attn.output.dense.weight.shape == (32, 16)
    assert attn.self.num_attention_heads == 2 and attn.self.all_head_size == 16
    # 5 heads gone, each 8 rows of q, k, v (with biases) and 8 dense columns
    assert before - count_parameters(model) == 5 * (3 * (8 * 32 + 8) + 32 * 8)
    with torch.no_grad():
        torch.testing.assert_close(model(**_inputs()).logits, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="bad heads"):
        slice_encoder_heads_(model, [[0, 5], [0]])


def test_reduce_prune_and_recover_a_bert_student(
    bert_teacher: nn.Module,
    token_data: Callable[..., list[dict[str, torch.Tensor]]],
    token_accuracy: Callable[[nn.Module, list[dict[str, Any]]], float],
) -> None:
    batches, held_out = token_data(8, seed=21), token_data(2, 64, seed=99)
    student = drop_encoder_layers(bert_teacher, 2)
    outcome = prune_encoder_heads_(
        student, batches, HeadPruneConfig(keep_ratio=0.5, method="gradient"), teacher=bert_teacher
    )
    assert outcome.heads_before == [4, 4] and sum(outcome.heads_after) == 4
    assert outcome.parameters_after < outcome.parameters_before < count_parameters(bert_teacher)
    assert all(len(v) == 4 for v in outcome.importance)
    assert token_accuracy(student, held_out) >= 0.9  # the heads kept carry the task
    # recovery through the same Python API: the student stays with its teacher
    result = distill_module(bert_teacher, student, batches, ModuleDistillConfig(epochs=2, lr=3e-3))
    assert token_accuracy(student, held_out) >= 0.9
    assert result.history[-1]["agreement"] >= 0.9 and result.history[-1]["retention"] > 0.5


def test_gate_scores_come_from_distillation(
    bert_teacher: nn.Module, token_data: Callable[..., list[dict[str, torch.Tensor]]]
) -> None:
    student = drop_encoder_layers(bert_teacher, 1)
    params = count_parameters(student)
    prune = HeadPruneConfig(keep_ratio=0.5, method="gates", l1=0.05)
    outcome = prune_encoder_heads_(student, token_data(3, seed=22), prune, teacher=bert_teacher)
    assert outcome.heads_after == [2]
    assert any(abs(v - 1.0) > 1e-3 for v in outcome.importance[0])  # the gates moved
    assert not hasattr(student, "head_gates")  # and are gone again, folded into the weights
    assert count_parameters(student) < params
    with pytest.raises(ValueError, match="pass a teacher"):
        prune_encoder_heads_(student, token_data(1), prune)
