"""Local training: loss goes down, FedProx pulls towards the global model, distillation keeps
the deployed model's behaviour, the held-out share is stable, too few cases decline."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_agent.fl.local import (
    Declined,
    LocalCases,
    class_weights,
    evaluate_local,
    freezes_norm,
    get_weights,
    set_weights,
    train_local,
)
from edge_agent.fl.protocol import (
    M_EVAL_NUM_EXAMPLES,
    M_NUM_EXAMPLES,
    NORM_STATS_AUTO_BELOW,
    RoundConfig,
)
from models.nets import FundusNet

BASE = RoundConfig(
    local_epochs=3,
    lr=0.05,
    proximal_mu=0.0,
    distill_alpha=0.0,
    batch_size=8,
    min_cases=8,
    heldout_fraction=0.25,
    class_balance=0.0,
)


def _ce(model: FundusNet, cases: LocalCases) -> float:
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(cases.preprocess.normalise(cases.images)))
    return float(F.cross_entropy(out["grade_logits"], torch.from_numpy(cases.grades)))


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a if a[k].dtype.kind == "f")))


def test_training_lowers_the_loss_and_reports_metrics(
    student: FundusNet, cases: LocalCases
) -> None:
    start = get_weights(student)
    train, heldout = cases.split(BASE.heldout_fraction)
    before = _ce(student, train)
    weights, metrics = train_local(student, start, cases, BASE)
    set_weights(student, weights)
    assert _ce(student, train) < before
    assert metrics[M_NUM_EXAMPLES] == len(train)
    assert metrics[M_EVAL_NUM_EXAMPLES] == len(heldout) > 0
    assert 0.0 <= metrics["eval-accuracy"] <= 1.0
    assert np.isfinite(metrics["train-loss"])
    assert weights.keys() == start.keys()
    assert all(w.dtype == start[k].dtype for k, w in weights.items())


def test_class_weights_lift_rare_grades_and_keep_the_mean_weight() -> None:
    grades = np.array([0] * 80 + [1] * 10 + [2] * 8 + [4] * 2)
    assert np.allclose(class_weights(grades, 0.0, 5), 1.0)
    w = class_weights(grades, 0.5, 5)
    assert w[4] > w[2] > w[1] > w[0]
    assert w[3] == 1.0  # absent grade
    assert np.isclose(w[grades].mean(), 1.0)
    full = class_weights(grades, 1.0, 5)  # inverse frequency: every present grade weighs the same
    counts = np.bincount(grades, minlength=5)
    assert np.allclose((full * counts)[counts > 0], (full * counts)[0])


def test_class_balanced_training_lowers_the_weighted_loss(
    student: FundusNet, cases: LocalCases
) -> None:
    config = replace(BASE, class_balance=1.0, lr=0.01)
    train, _ = cases.split(config.heldout_fraction)
    weight = torch.from_numpy(class_weights(train.grades, 1.0, 5))

    def weighted_ce(model: FundusNet) -> float:
        model.eval()
        with torch.no_grad():
            out = model(torch.from_numpy(train.preprocess.normalise(train.images)))
        grades = torch.from_numpy(train.grades)
        return float(F.cross_entropy(out["grade_logits"], grades, weight=weight))

    before = weighted_ce(student)
    weights, _ = train_local(student, get_weights(student), cases, config)
    set_weights(student, weights)
    assert weighted_ce(student) < before


def test_proximal_term_pulls_towards_the_global_weights(
    student: FundusNet, cases: LocalCases
) -> None:
    start = get_weights(student)
    free, _ = train_local(student, start, cases, BASE)
    held, _ = train_local(student, start, cases, replace(BASE, proximal_mu=5.0))
    assert _distance(held, start) < 0.7 * _distance(free, start)


def test_distillation_keeps_the_deployed_model_s_predictions(
    student: FundusNet, cases: LocalCases
) -> None:
    teacher = copy.deepcopy(student)
    start = get_weights(student)
    x = torch.from_numpy(cases.preprocess.normalise(cases.images))
    with torch.no_grad():
        target = teacher.eval()(x)["grade_logits"].softmax(1)

    def drift(weights: dict[str, np.ndarray]) -> float:
        set_weights(student, weights)
        with torch.no_grad():
            p = student.eval()(x)["grade_logits"].softmax(1)
        return float((p - target).abs().sum(1).mean())

    labels_only, _ = train_local(student, start, cases, BASE)
    distilled, _ = train_local(
        student, start, cases, replace(BASE, distill_alpha=0.9), teacher=teacher
    )
    assert drift(distilled) < drift(labels_only)


def test_too_few_cases_decline_with_a_reason(student: FundusNet, cases: LocalCases) -> None:
    few = cases.subset(np.arange(5))
    with pytest.raises(Declined, match=r"5 reviewed cases.*min-cases=8"):
        train_local(student, get_weights(student), few, BASE)


def test_pause_runs_between_batches(student: FundusNet, cases: LocalCases) -> None:
    calls: list[int] = []
    config = replace(BASE, local_epochs=1)
    train_local(student, get_weights(student), cases, config, pause=lambda: calls.append(1))
    train, _ = cases.split(config.heldout_fraction)
    assert len(calls) == -(-len(train) // config.batch_size)


def test_heldout_share_is_stable_as_cases_arrive(
    case_factory: Callable[..., LocalCases],
) -> None:
    make = case_factory
    small: LocalCases = make(30)
    grown = LocalCases(
        np.concatenate([small.images, make(20, seed=9).images]),
        np.concatenate([small.grades, make(20, seed=9).grades]),
        small.preprocess,
    )
    _, held_small = small.split(0.3)
    _, held_grown = grown.split(0.3)
    kept = {img.tobytes() for img in held_grown.images}
    assert held_small.images.shape[0] > 0
    assert all(img.tobytes() in kept for img in held_small.images)


def test_set_weights_names_what_does_not_fit(student: FundusNet) -> None:
    weights = get_weights(student)
    weights["head.weight"] = weights["head.weight"][:, :2]
    with pytest.raises(ValueError, match=r"head\.weight"):
        set_weights(student, weights)


def test_evaluate_on_no_cases_is_all_zero(student: FundusNet, cases: LocalCases) -> None:
    metrics = evaluate_local(student, cases.subset(np.zeros(0, dtype=np.int64)))
    assert metrics[M_EVAL_NUM_EXAMPLES] == 0 and metrics["eval-accuracy"] == 0.0


def test_evaluation_proposes_the_sites_threshold_once_it_has_enough_referable_cases(
    student: FundusNet, cases: LocalCases
) -> None:
    few = evaluate_local(student, cases, site_point=True)
    positives = int(cases.task.is_referable(cases.grades).sum())
    assert few["eval-site-threshold"] == -1.0 and few["eval-site-needed"] > 0
    assert positives + few["eval-site-needed"] >= 88  # 88 referable: ±5 points at 95%
    many = cases.subset(np.tile(np.arange(len(cases)), 200 // max(positives, 1) + 1))
    enough = evaluate_local(student, many, site_point=True)
    assert enough["eval-site-needed"] == 0 and 0.0 <= enough["eval-site-threshold"] <= 1.0
    assert enough["eval-site-sensitivity"] >= 0.95
    assert enough["eval-site-lower"] <= enough["eval-site-sensitivity"] <= enough["eval-site-upper"]
    assert "eval-site-threshold" not in evaluate_local(student, cases)  # only when asked


def _running_stats(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in weights.items() if "running_" in k}


@pytest.mark.parametrize(
    ("norm_stats", "kept"), [("frozen", True), ("auto", True), ("local", False)]
)
def test_norm_stats_frozen_keeps_the_global_batchnorm_statistics(
    student: FundusNet, cases: LocalCases, norm_stats: str, kept: bool
) -> None:
    start = get_weights(student)
    assert _running_stats(start)
    weights, _ = train_local(student, start, cases, replace(BASE, norm_stats=norm_stats))
    same = [np.array_equal(v, weights[k]) for k, v in _running_stats(start).items()]
    assert all(same) if kept else not any(same)
    # the weights still train either way
    assert (
        _distance(
            {k: v for k, v in start.items() if "running_" not in k},
            {k: v for k, v in weights.items() if "running_" not in k},
        )
        > 0
    )


def test_norm_stats_auto_freezes_below_the_threshold_only() -> None:
    auto = RoundConfig(norm_stats="auto")
    assert freezes_norm(auto, NORM_STATS_AUTO_BELOW - 1)
    assert not freezes_norm(auto, NORM_STATS_AUTO_BELOW)
    assert freezes_norm(RoundConfig(norm_stats="frozen"), 10_000)
    assert not freezes_norm(RoundConfig(norm_stats="local"), 10)
    with pytest.raises(ValueError, match="norm-stats"):
        RoundConfig(norm_stats="sometimes")


def test_a_round_s_update_is_reproducible_with_dropout(cases: LocalCases) -> None:
    from models.nets import build_model

    torch.manual_seed(0)
    model = build_model("resnet-student", {"width": 4, "dropout": 0.5})
    start = get_weights(model)
    first, _ = train_local(model, start, cases, BASE)
    torch.rand(7)  # the process's generator moved on: the update must not depend on it
    second, _ = train_local(model, start, cases, BASE)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    third, _ = train_local(model, start, cases, dataclasses.replace(BASE, server_round=2))
    assert not all(np.array_equal(first[k], third[k]) for k in first)
