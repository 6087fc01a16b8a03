"""The device's own threshold from its reviewed cases: exact Clopper-Pearson intervals, no
proposal until the interval at the target is within 5 points (saying how many more referable
reviews it needs), and at a site whose camera lowers the model's scores, the proposed threshold
brings sensitivity on further images back to the target."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.screening import clopper_pearson, propose, referable_needed


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(95, 100, (0.88717, 0.98357)), (0, 10, (0.0, 0.30850)), (10, 10, (0.69150, 1.0)),
     (5, 20, (0.08657, 0.49105))],
)  # fmt: skip
def test_clopper_pearson_matches_the_exact_interval(
    k: int, n: int, expected: tuple[float, float]
) -> None:
    lo, hi = clopper_pearson(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4) and hi == pytest.approx(expected[1], abs=1e-4)


def _site(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A site whose camera lowers the scores of referable eyes: at the bundle's threshold of
    0.5 it refers only about 68% of them."""
    referable = rng.random(n) < 0.3
    return np.where(referable, rng.beta(4, 3, n), rng.beta(2, 6, n)), referable


def test_no_proposal_until_the_interval_is_narrow_enough() -> None:
    scores, referable = _site(np.random.default_rng(0), 150)  # about 45 referable eyes
    point = propose(scores, referable, current=0.5)
    assert not point.ready and point.threshold is None
    assert point.needed == referable_needed(0.95, 0.05, point.referable_reviews) > 0
    assert point.current_sensitivity is not None and point.current_sensitivity < 0.8


def test_an_applied_proposal_brings_the_sites_sensitivity_back() -> None:
    """Reviews arrive 25 at a time; once a proposal is ready it is applied and sensitivity is
    measured on 2,000 further images of the site (20 simulated sites)."""
    after, reviewed = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scores, referable = _site(rng, 25)
        while not (point := propose(scores, referable, current=0.5)).ready:
            more = _site(rng, 25)
            scores, referable = (
                np.concatenate([scores, more[0]]),
                np.concatenate([referable, more[1]]),
            )
        lo, hi = point.interval or (0.0, 1.0)
        assert (hi - lo) / 2 <= 0.05 and point.needed == 0 and point.referable_reviews >= 80
        further, truth = _site(rng, 2000)
        after.append(float((further[truth] >= point.threshold).mean()))
        reviewed.append(point.referable_reviews)
    after_ = np.array(after)
    assert np.median(after_) >= 0.95  # measured 0.97
    assert (after_ >= 0.93).sum() >= 18, after  # target - 2 points at 18 or more of 20 sites
