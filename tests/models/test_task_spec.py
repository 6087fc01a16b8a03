"""The task as data: the built-in DR spec, the shipped examples, bad specs, scores and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from models import metrics
from models.task import (
    DR_GRADING,
    GRADE_NAMES,
    OUTPUT_NAMES,
    REFERABLE_MIN_GRADE,
    TaskSpecError,
    load_task,
    parse_task,
    referable_probability,
    softmax,
)

TASKS = Path(__file__).parents[2] / "configs" / "tasks"


def test_the_built_in_dr_task_is_the_shipped_spec_and_the_constants() -> None:
    assert load_task(TASKS / "dr-grading.yaml") == DR_GRADING
    assert DR_GRADING.classes == GRADE_NAMES and REFERABLE_MIN_GRADE == 2
    assert OUTPUT_NAMES == ("grade_logits", "gradable_logit")
    assert parse_task(yaml.safe_load(DR_GRADING.to_yaml())) == DR_GRADING


@pytest.mark.parametrize(
    ("name", "kind", "shapes"),
    [
        ("glaucoma-referral", "binary", {"glaucoma_logit": (1,), "gradable_logit": (1,)}),
        ("amd-staging", "multiclass", {"amd_logits": (4,), "gradable_logit": (1,)}),
        ("fundus-findings", "multilabel", {"finding_logits": (4,)}),
    ],
)
def test_example_specs_load_with_their_outputs(
    name: str, kind: str, shapes: dict[str, tuple[int, ...]]
) -> None:
    spec = load_task(TASKS / f"{name}.yaml")
    assert (spec.name, spec.kind, spec.output_shapes()) == (name, kind, shapes)


def _dr(**changes: object) -> dict[str, object]:
    return {**DR_GRADING.model_dump(mode="json"), **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, r"colour: unknown key"),
        ({"kind": "ordinal"}, r"kind: Input should be"),
        ({"referral": {"classes": ["severe"]}}, r"referral names \['severe'\]"),
        ({"referral": {"labels": ["mild NPDR"]}}, "refers by referral.classes"),
        ({"referral": {"classes": list(GRADE_NAMES)}}, "nothing would be cleared"),
        ({"kind": "binary"}, "two classes"),
        ({"kind": "multiclass"}, "worse_eye needs ordered classes"),
        ({"classes": ["a", "a", "b"], "referral": {"classes": ["b"]}}, "repeat a name"),
        ({"outputs": {"classes": "x", "quality": "x"}}, "both 'x'"),
        ({"input": {"channels": 2}}, r"input.channels"),
    ],
)
def test_bad_specs_name_the_file_and_field(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(_dr(**changes)))
    with pytest.raises(TaskSpecError, match=message) as err:
        load_task(path)
    assert str(path) in str(err.value)


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(TaskSpecError, match="no such task spec file"):
        load_task(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("kind: [grading\n")
    with pytest.raises(TaskSpecError, match="not valid YAML"):
        load_task(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- grading\n")
    with pytest.raises(TaskSpecError, match="is a mapping"):
        load_task(tmp_path / "list.yaml")


def test_labels_outside_the_classes_are_refused_by_name() -> None:
    amd = load_task(TASKS / "amd-staging.yaml")
    assert amd.class_index(["no AMD", "advanced AMD"]).tolist() == [0, 3]
    with pytest.raises(TaskSpecError, match=r"\['geographic atrophy'\]"):
        amd.class_index(["no AMD", "geographic atrophy"])
    with pytest.raises(TaskSpecError, match=r"labels \[4\] are outside 0..3"):
        amd.check_labels(np.array([0, 4, -1]))
    findings = load_task(TASKS / "fundus-findings.yaml")
    with pytest.raises(TaskSpecError, match="N x 4 of 0/1"):
        findings.check_labels(np.array([[0, 1, 2, 0]]))


def test_outputs_that_do_not_match_the_spec_are_named() -> None:
    DR_GRADING.check_outputs({"grade_logits": np.zeros((2, 5)), "gradable_logit": np.zeros(2)})
    with pytest.raises(TaskSpecError, match="no output 'gradable_logit'"):
        DR_GRADING.check_outputs({"grade_logits": np.zeros((2, 5))})
    with pytest.raises(TaskSpecError, match=r"'grade_logits' is N x \(4,\)"):
        DR_GRADING.check_outputs({"grade_logits": np.zeros((2, 4)), "gradable_logit": np.zeros(2)})


def test_referral_score_follows_the_kind() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5))
    np.testing.assert_allclose(DR_GRADING.referral_score(logits), referable_probability(logits))
    glaucoma = load_task(TASKS / "glaucoma-referral.yaml")
    z = rng.normal(size=(8, 1))
    np.testing.assert_allclose(glaucoma.referral_score(z), 1 / (1 + np.exp(-z[:, 0])))
    findings = load_task(TASKS / "fundus-findings.yaml")
    z = rng.normal(size=(8, 4))
    p = 1 / (1 + np.exp(-z))
    expected = 1 - (1 - p[:, 0]) * (1 - p[:, 1]) * (1 - p[:, 2])  # "drusen only" never refers
    np.testing.assert_allclose(findings.referral_score(z), expected)
    assert DR_GRADING.patient_class([1, 3]) == 3 and glaucoma.patient_class([0, 1]) is None
    assert glaucoma.patient_refers([False, True]) and not glaucoma.patient_refers([False, False])


def _dr_sample(n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    grade = rng.integers(0, 5, n)
    grade[:20] = -1  # ungraded
    logits = rng.normal(size=(n, 5)) + 2.0 * np.eye(5)[np.clip(grade, 0, 4)]
    gradable = rng.random(n) > 0.1
    quality = np.where(gradable, 2.0, -2.0) + rng.normal(size=n)
    return logits, grade, gradable, quality


def test_dr_headline_metrics_are_the_dr_metrics_computed_by_hand() -> None:
    logits, grade, gradable, quality = _dr_sample()
    threshold = metrics.operating_point(metrics.Predictions(logits, quality, grade, gradable), 0.9)
    assert metrics.task_operating_point(DR_GRADING, logits, grade, 0.9, gradable) == threshold
    dr = metrics.screening_metrics(
        metrics.Predictions(logits, quality, grade, gradable, threshold), resamples=50
    )
    recalls = tuple(f"recall[{c}]" for c in GRADE_NAMES)
    assert tuple(dr) == metrics.METRIC_NAMES + recalls  # the headline, then per-grade recall
    labelled = gradable & (grade >= 0)
    refer = softmax(logits)[:, 2:].sum(1) >= threshold
    truth = grade >= 2
    assert dr["accuracy"].value == pytest.approx((logits.argmax(1) == grade)[labelled].mean())
    assert dr["referable_sensitivity"].value == pytest.approx(refer[labelled & truth].mean())
    assert dr["referable_specificity"].value == pytest.approx((~refer)[labelled & ~truth].mean())
    assert dr["referable_sensitivity"].value == pytest.approx(0.9, abs=0.02)
    for i, name in enumerate(GRADE_NAMES):
        this = labelled & (grade == i)
        assert dr[f"recall[{name}]"].value == pytest.approx((logits.argmax(1) == i)[this].mean())
    generic = metrics.task_metrics(
        DR_GRADING, logits, grade, threshold, gradable=(quality, gradable), resamples=50
    )
    assert {f"recall[{c}]" for c in GRADE_NAMES} <= set(generic)


def test_multilabel_metrics_are_per_label_aucs_and_the_referral_rule() -> None:
    findings = load_task(TASKS / "fundus-findings.yaml")
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=(300, 4))
    logits = np.where(labels == 1, 3.0, -3.0) + rng.normal(size=(300, 4))
    logits[:, 3] = rng.normal(size=300)  # the last label is guessed
    threshold = metrics.task_operating_point(findings, logits, labels)
    m = metrics.task_metrics(findings, logits, labels, threshold, resamples=0)
    assert m["auc[referable DR]"].value > 0.95 and 0.35 < m["auc[drusen only]"].value < 0.65
    assert m["referable_sensitivity"].value >= 0.9
    assert "kappa" not in m and "mean_auc" in m
    hamming = ((1 / (1 + np.exp(-logits)) >= 0.5) == labels.astype(bool)).mean()
    assert m["accuracy"].value == pytest.approx(hamming)
    assert "accuracy" in metrics.headline_metrics(findings)
    # an ungradable image (its findings row all 0) is left out when the task has no quality head
    gradable = np.ones(300, bool)
    gradable[:40] = False
    wrong = labels.copy()
    wrong[:40] = 0
    p = metrics.Predictions(logits, None, wrong, gradable, threshold, findings)
    kept = metrics.Predictions(logits[40:], None, labels[40:], gradable[40:], threshold, findings)
    got, want = (
        metrics.screening_metrics(p, resamples=0),
        metrics.screening_metrics(kept, resamples=0),
    )
    assert {k: v.value for k, v in got.items()} == pytest.approx(
        {k: v.value for k, v in want.items()}
    )


def test_checkpoint_meta_carries_the_task_and_refuses_other_labels() -> None:
    from models.nets import CheckpointMeta

    base = {"name": "s", "family": "resnet", "config": {}, "parameters": 1,
            "preprocess": {"size": 32}}  # fmt: skip
    assert CheckpointMeta.model_validate(base).task == DR_GRADING  # older checkpoints: DR
    amd = load_task(TASKS / "amd-staging.yaml")
    meta = CheckpointMeta.model_validate({**base, "task": amd.model_dump(), "labels": amd.classes})
    assert meta.task == amd
    with pytest.raises(ValueError, match="not task amd-staging's classes"):
        CheckpointMeta.model_validate({**base, "task": amd.model_dump()})
