"""Shared fixtures of the federated-client tests: a tiny student and a synthetic site's cases."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge_agent.fl.local import LocalCases
from models.nets import FundusNet, build_model
from models.preprocess import PreprocessSpec
from models.synth import SITES, generate

SIZE = 32


def make_cases(n: int, site: str = "site-b", seed: int = 0) -> LocalCases:
    """``n`` gradable synthetic cases of ``site`` at SIZE pixels."""
    data = generate(SITES[site], n * 2, size=SIZE, seed=seed)
    keep = np.flatnonzero(data.grade >= 0)[:n]
    images = data.images[keep]
    return LocalCases(images, data.grade[keep].astype(np.int64), PreprocessSpec.fitted(images))


@pytest.fixture(scope="module")
def cases() -> LocalCases:
    """48 reviewed cases of one site."""
    return make_cases(48)


@pytest.fixture
def student() -> FundusNet:
    """A tiny ResNet student (seeded)."""
    import torch

    torch.manual_seed(0)
    return build_model("resnet-student", {"width": 4})


@pytest.fixture(scope="session")
def case_factory() -> Callable[..., LocalCases]:
    """``make_cases`` for tests that need another site or size."""
    return make_cases
