"""Fixtures for the token-input (Hugging Face BERT-like) tests: tiny random configs, a learnable
synthetic token task, and a teacher trained on it once per session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

SEQ = 16
VOCAB = 100
MARK = 3
"""The token whose presence makes a sequence positive."""


def _bert(layers: int, seed: int = 0, classify: bool = True) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=SEQ * 2,
        num_labels=2,
    )
    torch.manual_seed(seed)
    if classify:
        return transformers.BertForSequenceClassification(config)
    return transformers.BertModel(config)


@pytest.fixture(scope="session")
def tiny_bert() -> Callable[..., nn.Module]:
    """``tiny_bert(layers, seed=0, classify=True)``: a random BERT (hidden 32, 4 heads, vocab
    100), with a 2-class head or (``classify`` False) the bare encoder."""
    return _bert


def token_batches(count: int, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of ``input_ids``, ``attention_mask`` (a padded tail on some rows) and
    ``labels``: 1 when token 3 occurs among the real tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(5, VOCAB, (size, SEQ), generator=g)
        ids[:, 0] = 1  # [CLS]
        lengths = torch.randint(SEQ // 2, SEQ + 1, (size,), generator=g)
        mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()
        labels = torch.randint(0, 2, (size,), generator=g)
        for i in torch.nonzero(labels).flatten().tolist():
            ids[i, int(torch.randint(1, int(lengths[i]), (1,), generator=g))] = MARK
        ids[mask == 0] = 0  # [PAD]
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


@pytest.fixture(scope="session")
def token_data() -> Callable[..., list[dict[str, torch.Tensor]]]:
    """The :func:`token_batches` maker."""
    return token_batches


def accuracy(model: nn.Module, batches: list[dict[str, Any]]) -> float:
    """Share of sequences whose top logit is their label."""
    model.eval()
    right = total = 0
    with torch.no_grad():
        for b in batches:
            inputs = {k: v for k, v in b.items() if k != "labels"}
            right += int((model(**inputs).logits.argmax(-1) == b["labels"]).sum())
            total += len(b["labels"])
    return right / total


@pytest.fixture(scope="session")
def bert_teacher() -> nn.Module:
    """A 4-layer BERT classifier trained on the token task (treat as read-only: copy it to
    change it)."""
    model = _bert(4, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        for b in token_batches(12, seed=10):
            loss = model(**b).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    assert accuracy(model, token_batches(2, 64, seed=99)) >= 0.95, "the teacher did not learn"
    return model


@pytest.fixture(scope="session")
def token_accuracy() -> Callable[[nn.Module, list[dict[str, Any]]], float]:
    """The :func:`accuracy` function."""
    return accuracy
