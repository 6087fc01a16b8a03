"""The promotion gate on simulated paired predictions: small losses cannot add up, an equally
good candidate passes at the demo's held-out size and margin, sites block only clear losses."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from models import Predictions
from models.synth import SITES, generate
from server.federation.gate import gate, images_needed, pass_probability, site_results

METRICS = ("accuracy", "referable_sensitivity", "referable_specificity")
_SAME_SIDE = {0: 1, 1: 0, 2: 3, 3: 2, 4: 3}
"""A wrong grade on the same side of the referral line (sensitivity and specificity stay)."""


@functools.cache
def _grades(images: int) -> np.ndarray:
    """The labels of the demo's held-out site (site-e), ``images`` of them (-1: ungradable)."""
    return generate(SITES["site-e"], images, size=32, seed=0).grade


class HeldOut:
    """Labels of a synthetic held-out site and predictions on it as one-hot logits."""

    def __init__(self, images: int, *, gradable_only: bool = False) -> None:
        grades = _grades(images * 2 if gradable_only else images)
        self.truth = grades[grades >= 0][:images] if gradable_only else grades
        self.gradable = self.truth >= 0
        self.idx = np.flatnonzero(self.gradable)

    def predictions(self, pred: np.ndarray) -> Predictions:
        n = len(self.truth)
        logits = np.full((n, 5), -10.0, np.float32)
        logits[np.arange(n), pred] = 10.0
        quality = np.where(self.gradable, 10.0, -10.0).astype(np.float32)
        return Predictions(logits, quality, self.truth, self.gradable)

    def accuracy(self, pred: np.ndarray) -> float:
        return 100.0 * float(np.mean(pred[self.idx] == self.truth[self.idx]))

    def model(self, rng: np.random.Generator, accuracy: float) -> np.ndarray:
        """Grades right on ``accuracy`` of the gradable images, else one grade off (either way,
        so some errors cross the referral line)."""
        pred = np.where(self.gradable, self.truth, 0)
        wrong = rng.choice(self.idx, round((1 - accuracy) * len(self.idx)), replace=False)
        pred[wrong] = _off_by_one(self.truth[wrong], rng)
        return pred


def _off_by_one(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.clip(truth + rng.choice([-1, 1], len(truth)), 0, 4)
    return np.where(out == truth, [_SAME_SIDE[g] for g in truth], out)


def _worse(data: HeldOut, pred: np.ndarray, rng: np.random.Generator, loss: float) -> np.ndarray:
    """``pred`` made exactly ``loss`` points less accurate, and as many images again changed
    both ways (right <-> wrong), all on the same side of the referral line."""
    right = data.idx[pred[data.idx] == data.truth[data.idx]]
    wrong = data.idx[pred[data.idx] != data.truth[data.idx]]
    k = round(loss / 100 * len(data.idx))
    spoil = rng.choice(right, 2 * k, replace=False)
    mend = rng.choice(wrong, k, replace=False)
    out = pred.copy()
    out[spoil] = [_SAME_SIDE[g] for g in data.truth[spoil]]
    out[mend] = data.truth[mend]
    return out


def _equal(data: HeldOut, pred: np.ndarray, rng: np.random.Generator, d: float) -> np.ndarray:
    """An equally good model (same expected accuracy) that disagrees with ``pred`` on whether
    it is right on a fraction ``d`` of the images, each image drawn on its own."""
    ok = pred[data.idx] == data.truth[data.idx]
    u = rng.random(len(data.idx))
    spoil = data.idx[ok & (u < d / 2 / ok.mean())]
    mend = data.idx[~ok & (u < d / 2 / (1 - ok.mean()))]
    out = pred.copy()
    out[mend] = data.truth[mend]
    out[spoil] = _off_by_one(data.truth[spoil], rng)
    return out


def test_five_candidates_each_04_points_worse_cannot_walk_the_model_down() -> None:
    """Today's rule (within the margin of the deployed model) promotes all five and ends 2.0
    points below the validated model, and so does a paired gate against the deployed model
    alone; the gate against both ends within the margin of the validated model."""
    margin = 1.0
    data = HeldOut(2000, gradable_only=True)
    rng = np.random.default_rng(7)
    validated = data.model(rng, 0.75)
    deployed, todays, paired_only, candidate = validated, validated, validated, validated
    promoted = []
    for step in range(5):
        candidate = _worse(data, candidate, rng, 0.4)
        refs = {"deployed": data.predictions(deployed)}
        if deployed is not validated:
            refs["validated"] = data.predictions(validated)
        result = gate(data.predictions(candidate), refs, METRICS, margin, resamples=1000)
        if result.passed:
            deployed = candidate
            promoted.append(step)
        if data.accuracy(candidate) >= data.accuracy(todays) - margin:
            todays = candidate
        # the paired gate against the deployed model alone still ratchets down
        alone = {"deployed": data.predictions(paired_only)}
        if gate(data.predictions(candidate), alone, METRICS, margin, resamples=1000).passed:
            paired_only = candidate
    assert data.accuracy(todays) - data.accuracy(validated) == pytest.approx(-2.0)
    assert data.accuracy(paired_only) - data.accuracy(validated) < -margin
    assert promoted, "the gate promoted nothing: the test would not show that it can promote"
    assert data.accuracy(deployed) - data.accuracy(validated) >= -margin
    assert data.accuracy(deployed) - data.accuracy(validated) == pytest.approx(-0.4)


def _demo_heldout_and_margin(tmp_path: Path) -> tuple[int, float]:
    from server.demo.federation import demo_run_config

    config = demo_run_config(tmp_path, tmp_path, tmp_path / "k", 2, (tmp_path / "c.yaml", None))
    return int(config["heldout-limit"]), float(config["promotion-margin"])


def test_an_equal_candidate_is_promoted_at_the_demos_heldout_size(tmp_path: Path) -> None:
    images, margin = _demo_heldout_and_margin(tmp_path)
    assert (images, margin) == (2000, 2.5)
    data = HeldOut(images)
    rng = np.random.default_rng(0)
    deployed = data.model(rng, 0.73)
    candidate = _equal(data, deployed, rng, 0.10)
    assert abs(data.accuracy(candidate) - data.accuracy(deployed)) < 1.0
    result = gate(data.predictions(candidate), {"deployed": data.predictions(deployed)},
                  METRICS, margin)  # fmt: skip
    assert result.passed, result.reason
    assert "non-inferior to deployed" in result.reason


@pytest.mark.slow
def test_equal_candidates_pass_at_least_80_percent_of_the_time(tmp_path: Path) -> None:
    images, margin = _demo_heldout_and_margin(tmp_path)
    data = HeldOut(images)
    draws, passed = 50, 0
    for seed in range(draws):
        rng = np.random.default_rng(100 + seed)
        deployed = data.model(rng, 0.73)
        candidate = _equal(data, deployed, rng, 0.10)
        refs = {"deployed": data.predictions(deployed)}
        passed += gate(data.predictions(candidate), refs, METRICS, margin, resamples=500).passed
    assert passed >= 0.8 * draws, f"{passed} of {draws}"
    # the old margin at the same size: an equal candidate is mostly refused
    rng = np.random.default_rng(100)
    deployed = data.model(rng, 0.73)
    candidate = _equal(data, deployed, rng, 0.10)
    refs = {"deployed": data.predictions(deployed)}
    assert not gate(data.predictions(candidate), refs, METRICS, 0.5, resamples=500).passed


def test_the_power_calculation_behind_the_margins() -> None:
    # accuracy: ~1,860 gradable images, 11% discordance; sensitivity: ~600 referable cases, 3%
    assert pass_probability(1863, 0.11, 2.5) == pytest.approx(0.946, abs=0.005)
    assert pass_probability(603, 0.03, 2.5) == pytest.approx(0.975, abs=0.005)
    assert pass_probability(1863, 0.11, 0.5) < 0.2
    assert images_needed(0.11, 2.5) == 1089  # the demo's 1,863 gradable images are enough
    assert images_needed(0.03, 2.5) == 297  # the demo's ~600 referable cases are enough
    assert images_needed(0.11, 0.5) > 27_000  # the old margin: far beyond the site's 2,000


def test_a_site_blocks_only_a_loss_beyond_the_margin_with_confidence() -> None:
    data = HeldOut(400)
    rng = np.random.default_rng(1)
    deployed = data.model(rng, 0.75)
    refs = {"deployed": data.predictions(deployed)}
    few = {"clinic-1": {"candidate": {"eval-accuracy": 0.60, "deployed-eval-accuracy": 0.70,
                                      "eval-num-examples": 12.0}}}  # fmt: skip
    many = {"clinic-2": {"candidate": {"eval-accuracy": 0.60, "deployed-eval-accuracy": 0.80,
                                       "eval-num-examples": 400.0}}}  # fmt: skip
    (dip,) = site_results(few, 2.5)
    assert dip.verdict == "ok" and dip.difference == pytest.approx(-10.0)
    assert gate(data.predictions(deployed), refs, METRICS, 2.5, few, resamples=200).passed
    blocked = gate(data.predictions(deployed), refs, METRICS, 2.5, many, resamples=200)
    assert not blocked.passed and "site clinic-2: accuracy -20.00 on 400 cases" in blocked.reason
    (unknown,) = site_results({"clinic-3": {"candidate": {}}}, 2.5)
    assert unknown.verdict == "not measured"


def test_the_decision_record_says_what_was_compared_and_why() -> None:
    data = HeldOut(400)
    rng = np.random.default_rng(2)
    validated = data.model(rng, 0.80)
    deployed = _worse(data, validated, rng, 1.0)
    candidate = _worse(data, deployed, rng, 5.0)
    refs = {"deployed": data.predictions(deployed), "validated": data.predictions(validated)}
    result = gate(data.predictions(candidate), refs, METRICS, 2.5, resamples=500)
    record = result.to_json()
    assert record["verdict"] == "keep" and record["margin"] == 2.5
    rows = {(c["reference"], c["metric"]): c for c in record["comparisons"]}
    assert set(rows) == {(r, m) for r in ("deployed", "validated") for m in METRICS}
    acc = rows[("validated", "accuracy")]
    assert acc["difference"] == pytest.approx(-6.0, abs=0.3)
    assert acc["lower"] < acc["difference"] < acc["upper"] and not acc["passed"]
    assert f"accuracy vs validated: {acc['difference']:+.2f}" in record["reason"]
    assert rows[("deployed", "referable_sensitivity")]["passed"]
