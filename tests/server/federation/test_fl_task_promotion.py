"""The promotion gate in the deployed model's task: a four-class AMD task without a quality head is
scored by its own metrics, a candidate that stops referring is kept out, held-out data of
another task or with labels outside the task is refused, and rehearsal labels follow the task."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from models import DR_GRADING, PreprocessSpec, Referral, TaskSpec, TaskSpecError, load_task
from models.nets import build_model, save_checkpoint
from models.synth import SITES, generate
from server.federation.evaluation import HeldoutSet, evaluate_weights
from server.federation.promotion import promote
from server.federation.rehearsal import synthetic_labels
from server.federation.weights import Weights, load_weights

SIZE = 32
REPO = Path(__file__).resolve().parents[3]
AMD = load_task(REPO / "configs" / "tasks" / "amd-staging.yaml").model_copy(
    update={"quality_head": False}
)  # four classes, one softmax, no quality head


@pytest.fixture(scope="module")
def heldout() -> HeldoutSet:
    """A synthetic site labelled for AMD (referable DR stands in for intermediate AMD)."""
    data = generate(SITES["site-c"], 80, size=SIZE, seed=3)
    grade = np.where(data.grade >= 0, synthetic_labels(AMD, data.grade), -1)
    return HeldoutSet("site-c", dataclasses.replace(data, grade=grade), AMD)


@pytest.fixture
def checkpoint(tmp_path: Path, heldout: HeldoutSet) -> Path:
    """A tiny student of AMD, saved as the deployed checkpoint."""
    torch.manual_seed(0)
    model = build_model("resnet-student", {"width": 4}).for_task_(AMD)
    spec = PreprocessSpec.fitted(heldout.arrays.images)
    return save_checkpoint(model, tmp_path / "deployed", name="amd", preprocess=spec)


def _always(weights: Weights, index: int) -> Weights:
    """``weights`` whose head answers class ``index`` for every image."""
    bias = np.zeros(AMD.num_classes, np.float32)
    bias[index] = 8.0
    return weights | {"head.weight": np.zeros_like(weights["head.weight"]), "head.bias": bias}


def test_the_candidate_is_scored_by_the_task_and_one_that_stops_referring_is_kept_out(
    checkpoint: Path, heldout: HeldoutSet
) -> None:
    deployed = _always(load_weights(checkpoint), AMD.classes.index("intermediate AMD"))
    m = evaluate_weights(checkpoint, deployed, heldout.arrays)
    assert set(m) == {"accuracy", "referable_sensitivity", "referable_specificity", "images"}
    assert m["referable_sensitivity"] == 100.0 and m["referable_specificity"] == 0.0
    labelled = heldout.arrays.grade[heldout.arrays.grade >= 0]
    assert m["accuracy"] == pytest.approx(100.0 * np.mean(labelled == 2))

    silent = _always(deployed, AMD.classes.index("no AMD"))
    d = promote(silent, checkpoint, heldout, 0.5, {}, package=None, deployed_weights=deployed)
    assert not d.promoted
    assert "referable_sensitivity vs deployed: -100.00" in d.reason
    same = promote(deployed, checkpoint, heldout, 0.5, {}, package=None, deployed_weights=deployed)
    assert "non-inferior to deployed" in same.reason and "signing-key" in same.reason


def test_heldout_data_of_another_task_or_outside_its_classes_is_refused(
    checkpoint: Path, heldout: HeldoutSet
) -> None:
    weights = load_weights(checkpoint)
    dr = dataclasses.replace(heldout, task=DR_GRADING)
    with pytest.raises(ValueError, match=r"labelled for task dr-grading.*answers task amd-staging"):
        promote(weights, checkpoint, dr, 0.5, {}, package=None)
    grades = heldout.arrays.grade.copy()
    grades[0] = 4
    bad = dataclasses.replace(heldout.arrays, grade=grades)
    with pytest.raises(TaskSpecError, match=r"amd-staging: labels \[4\] are outside 0..3"):
        evaluate_weights(checkpoint, weights, bad)


def test_rehearsal_labels_follow_the_task() -> None:
    grades = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(synthetic_labels(DR_GRADING, grades), grades)
    np.testing.assert_array_equal(synthetic_labels(AMD, grades), [0, 0, 2, 2, 2])
    findings = TaskSpec(
        name="findings", kind="multilabel", classes=("a", "b"), referral=Referral(labels=("a",))
    )
    with pytest.raises(ValueError, match="findings is multilabel"):
        synthetic_labels(findings, grades)


def test_a_channel_pruned_checkpoint_is_scored_with_its_own_widths(tmp_path: Path) -> None:
    from server.compress.channels import prune_channels_

    torch.manual_seed(0)
    model = build_model("resnet", {"width": 8, "depths": [1, 1]}).eval()
    prune_channels_(model, 0.5, 32)
    spec = PreprocessSpec(size=32)
    ckpt = save_checkpoint(model, tmp_path / "pruned", name="pruned", preprocess=spec)
    heldout = generate(SITES["site-e"], 24, size=32, seed=0)
    scores = evaluate_weights(ckpt, load_weights(ckpt), heldout)
    assert scores["images"] == 24 and 0 <= scores["accuracy"] <= 100
