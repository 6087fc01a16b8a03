"""Teacher-assistant chains: automatic assistant sizes, and a chain distilled generation by
generation with the search and its decay recorded."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from models.nets import build_model, count_parameters, read_meta
from server.compress.assistants import ChainConfig, distil_chain, interpolate_config, plan_chain
from server.distill.config import ModelRef


def _params(ref: ModelRef) -> int:
    return count_parameters(build_model(ref.name, ref.config))


def test_no_assistants_when_the_ratio_is_small() -> None:
    t, s = ModelRef(name="resnet-teacher-small"), ModelRef(name="resnet-student")
    assert _params(t) / _params(s) < 8
    assert plan_chain(t, s, ChainConfig(max_ratio=8)) == []


def test_assistants_step_down_in_roughly_equal_ratios() -> None:
    t, s = ModelRef(name="vit-teacher"), ModelRef(name="vit-student")
    chain = plan_chain(t, s, ChainConfig(max_ratio=3))
    sizes = [_params(t), *(_params(a) for a in chain), _params(s)]
    assert len(chain) == 2  # 16x overall: three steps of about 2.5x
    assert sizes == sorted(sizes, reverse=True)
    for big, small in itertools.pairwise(sizes):
        assert 1.5 < big / small < 4
    for a in chain:
        assert a.name == "vit" and a.config["dim"] % a.config["heads"] == 0
        assert a.config["patch"] == 8 and a.config["image_size"] == 64  # from the student


def test_assistants_come_from_the_students_family_across_families() -> None:
    chain = plan_chain(
        ModelRef(name="vit-teacher"), ModelRef(name="resnet-student"), ChainConfig(max_ratio=4)
    )
    assert chain and all(a.name == "resnet" for a in chain)
    assert all(a.config["depths"] == [1, 1, 1, 1] for a in chain)
    assert (
        plan_chain(
            ModelRef(name="vit-teacher"),
            ModelRef(name="resnet-student"),
            ChainConfig(max_ratio=4, max_assistants=1),
        ).__len__()
        == 1
    )


def test_interpolation_is_geometric_and_keeps_the_students_fixed_keys() -> None:
    low = {"dim": 16, "depth": 2, "heads": 2, "patch": 4, "image_size": 32}
    high = {"dim": 256, "depth": 8, "heads": 8, "patch": 8, "image_size": 64}
    mid = interpolate_config("vit", low, high, 0.5)
    assert mid == {"dim": 64, "depth": 4, "heads": 4, "patch": 4, "image_size": 32}
    assert interpolate_config("vit", low, high, 0.0) == low


def test_a_chain_distils_each_generation_and_records_its_decay(
    tiny_data: Path, tiny_teacher: Path, distill_config: Any, tmp_path: Path
) -> None:
    cfg = distill_config(
        tiny_data,
        tiny_teacher,
        tmp_path / "unused",
        train={"epochs": 1, "batch_size": 32, "threads": 1},
        monitor={"enabled": False},
        search={
            "temperatures": [2.0],
            "alphas": [0.5],
            "epochs": 1,
            "fraction": 0.5,
            "compare_without_teacher": False,
        },
    )
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"limit": 256})})
    models = [
        ModelRef(name="resnet", config={"width": 6, "depths": [1, 1, 1]}),
        ModelRef(name="resnet", config={"width": 4, "depths": [1, 1, 1]}),
    ]
    outcome = distil_chain(cfg, models, tmp_path, log=lambda s: None)
    gens = outcome.generations
    assert [g.name for g in gens] == ["assistant1", "student"]
    assert gens[0].teacher_parameters > gens[0].parameters > gens[1].parameters
    assert gens[1].teacher_parameters == gens[0].parameters
    for g in gens:
        assert g.decay == pytest.approx(g.accuracy / g.teacher_accuracy)
        assert g.search is not None and g.search["temperature"] == 2.0
    assert gens[1].cumulative_decay == pytest.approx(gens[1].accuracy / gens[0].teacher_accuracy)
    # the student's lineage names both teachers, oldest first
    meta = read_meta(outcome.checkpoint)
    assert [a.name for a in meta.lineage] == ["teacher", "assistant1"]
    assert json.loads(json.dumps(outcome.as_dict()))["split"] == outcome.split


def test_assistant_chain_step_goes_direct_below_the_ratio(
    tiny_data: Path, tiny_teacher: Path, distill_config: Any, tmp_path: Path
) -> None:
    from models.nets import load_checkpoint
    from models.preprocess import PreprocessSpec
    from server.compress.steps import StepContext, run_step
    from server.training import TrainingData
    from server.training.data import load_splits

    cfg = distill_config(
        tiny_data,
        None,
        tmp_path / "unused",
        train={"epochs": 1, "batch_size": 32, "threads": 1},
        monitor={"enabled": False},
    )
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"limit": 128})})
    splits = load_splits(cfg.data, 0)
    data = TrainingData(PreprocessSpec.fitted(splits.train.images), splits.train, splits.val)
    top = load_checkpoint(tiny_teacher)[0]
    ctx = StepContext(data=data, teacher=None, distill=cfg, out_dir=tmp_path, log=lambda s: None)
    settings = {
        "student": {"name": "resnet", "config": {"width": 4, "depths": [1, 1, 1]}},
        "max_ratio": 100,
        "search": False,
    }
    result = run_step("assistant_chain", top, ctx, settings)
    assert [g["name"] for g in result.details["generations"]] == ["student"]
    assert result.model.config["width"] == 4 and len(result.curve) == 1
