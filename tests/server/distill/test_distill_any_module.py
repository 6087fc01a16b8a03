"""distill_module: a Hugging Face token-input teacher into a shallower student, and a plain MLP,
through the Python API; monitors report retention, the guard alerts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from server.distill import ModuleDistillConfig, MonitorConfig, distill_module


def _agreement(teacher: nn.Module, student: nn.Module, batches: list[dict[str, Any]]) -> float:
    same = total = 0
    with torch.no_grad():
        for b in batches:
            inputs = {k: v for k, v in b.items() if k != "labels"}
            t, s = teacher(**inputs).logits, student.eval()(**inputs).logits
            same += int((t.argmax(-1) == s.argmax(-1)).sum())
            total += len(t)
    return same / total


def test_bert_teacher_distils_into_a_shallower_student(
    bert_teacher: nn.Module,
    tiny_bert: Callable[..., nn.Module],
    token_data: Callable[..., list[dict[str, torch.Tensor]]],
    token_accuracy: Callable[..., float],
) -> None:
    student = tiny_bert(2, seed=2)
    held_out = token_data(2, 64, seed=99)
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for b in token_data(12, seed=3)]
    before = _agreement(bert_teacher, student, held_out)
    lines: list[str] = []
    result = distill_module(
        bert_teacher,
        student,
        unlabelled,  # soft targets and hidden states only: the student never sees a label
        ModuleDistillConfig(epochs=3, lr=3e-3),
        log=lines.append,
    )
    assert result.student is student
    # the repeated blocks, paired by relative depth
    assert result.layer_map == {
        "bert.encoder.layer.0": "bert.encoder.layer.1",
        "bert.encoder.layer.1": "bert.encoder.layer.3",
    }
    after = _agreement(bert_teacher, student, held_out)
    assert before < 0.75 and after >= 0.95
    assert token_accuracy(student, held_out) >= 0.9
    per_epoch = [sum(result.losses[i : i + 12]) / 12 for i in (0, 12, 24)]
    assert per_epoch[2] < 0.5 * per_epoch[0]
    # retention: measured before training and after each epoch, and it rose past the threshold
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    first, last = result.history[0], result.history[-1]
    assert last["retention"] > 0.85 > first["retention"]
    assert last["agreement"] > first["agreement"]
    assert set(last) >= {"cka", "soft_loss", "retention/bert.encoder.layer.3"}
    assert any("retention" in line for line in lines)
    # the teacher is left as it came: eval mode, its parameters' requires_grad unchanged
    assert not bert_teacher.training
    assert all(p.requires_grad for p in bert_teacher.parameters())


def test_feature_distillation_raises_retention(
    bert_teacher: nn.Module,
    tiny_bert: Callable[..., nn.Module],
    token_data: Callable[..., list[dict[str, torch.Tensor]]],
) -> None:
    batches = token_data(8, seed=4)
    retention = {}
    for weight in (0.0, 2.0):
        # with weight 0 the projectors still learn (on detached features): retention is measured
        config = ModuleDistillConfig(epochs=2, lr=3e-3, feature_weight=weight)
        result = distill_module(bert_teacher, tiny_bert(2, seed=5), batches, config)
        retention[weight] = result.history[-1]["retention"]
    assert retention[2.0] > retention[0.0] + 0.05


def _mlp(seed: int, hidden: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 3))  # fmt: skip
    with torch.no_grad():
        model[4].weight.mul_(5)  # a decisive teacher
    return model


def test_plain_mlp_with_tensor_batches() -> None:
    teacher, student = _mlp(0, 64), _mlp(1, 16)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(32, 8, generator=g) for _ in range(10)]
    with torch.no_grad():
        pairs = [(x, teacher(x).argmax(-1)) for x in xs]

    def agree() -> float:
        with torch.no_grad():
            same = [(teacher(x).argmax(-1) == student(x).argmax(-1)).float().mean() for x in xs]
        return float(sum(same) / len(xs))

    before = agree()
    # bare tensors: soft targets only; the hidden layers (not the logits layer) are tapped
    result = distill_module(teacher, student, xs, ModuleDistillConfig(epochs=5, lr=1e-2))
    assert result.layer_map == {"0": "0", "2": "2"}
    assert agree() > before + 0.3
    assert result.history[-1]["retention"] > result.history[0]["retention"]
    assert "gradient_consistency" not in result.history[-1]  # no labels on the probe
    # (inputs, targets) pairs: soft + hard, and gradient consistency on float inputs
    result = distill_module(teacher, student, pairs, ModuleDistillConfig(epochs=1, lr=1e-2))
    assert -1.0 <= result.history[-1]["gradient_consistency"] <= 1.0


def test_low_retention_raises_an_alert_and_strengthens() -> None:
    teacher, student = _mlp(0, 64), _mlp(1, 16)
    xs = [torch.randn(16, 8) for _ in range(3)]
    monitor = MonitorConfig(warmup_epochs=0, retention_threshold=0.999, min_gain=1.0)
    lines: list[str] = []
    config = ModuleDistillConfig(epochs=2, lr=1e-3, monitor=monitor)
    result = distill_module(teacher, student, xs, config, log=lines.append)
    alerts = [e for e in result.events if e["event"] == "alert"]
    assert alerts and alerts[0]["action"] == "strengthened distillation"
    assert any(line.startswith("ALERT epoch 1") for line in lines)


def test_wrong_input_is_named() -> None:
    teacher, student = _mlp(0, 32), _mlp(1, 16)
    xs = [torch.randn(4, 8)]
    with pytest.raises(ValueError, match="one-shot iterator"):
        distill_module(teacher, student, iter(xs), ModuleDistillConfig(epochs=2))
    with pytest.raises(KeyError, match="output_key 'logits'"):
        distill_module(teacher, student, xs, ModuleDistillConfig(output_key="logits"))
    with pytest.raises(ValueError, match=r"no module 'blocks\.9'"):
        distill_module(teacher, student, xs, ModuleDistillConfig(layer_map={"blocks.9": "2"}))
    with pytest.raises(ValueError, match="temperature"):
        ModuleDistillConfig(temperature=0.1)
    copy.deepcopy(teacher)  # the models are still usable after the errors
