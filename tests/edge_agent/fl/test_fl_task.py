"""The ClientApp follows the deployed model's task: a grey binary glaucoma task through Flower's
train and evaluate handlers on a real device root, a four-class AMD task without a quality head,
the loss by kind, referral by the task's rule, and labels the task does not have refused."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from torch import nn

from edge_agent.fl import app as client
from edge_agent.fl.device import load_deployed, load_reviewed
from edge_agent.fl.local import (
    M_EVAL_REFERABLE_POSITIVES,
    Declined,
    LocalCases,
    evaluate_local,
    get_weights,
    local_loss,
    set_weights,
    train_local,
)
from edge_agent.fl.protocol import (
    ARRAYS,
    CONFIG,
    M_DECLINED,
    M_EVAL_ACCURACY,
    M_EVAL_NUM_EXAMPLES,
    M_EVAL_REFERABLE_SENSITIVITY,
    M_NUM_EXAMPLES,
    METRICS,
    S_REASON,
    STATUS,
    RoundConfig,
)
from edge_agent.store import Store
from models import InputSpec, PreprocessSpec, Referral, TaskSpec, load_task
from models.nets import FundusNet, build_model, save_checkpoint

SIZE = 32  # the cases of conftest.make_cases

REPO = Path(__file__).resolve().parents[3]
GLAUCOMA = load_task(REPO / "configs" / "tasks" / "glaucoma-referral.yaml").model_copy(
    update={"input": InputSpec(channels=1, size=SIZE)}
)
AMD = load_task(REPO / "configs" / "tasks" / "amd-staging.yaml").model_copy(
    update={"quality_head": False}
)  # four classes, one softmax, no quality head
ROUND = RoundConfig(
    local_epochs=2,
    lr=0.05,
    proximal_mu=0.01,
    distill_alpha=0.5,
    batch_size=8,
    min_cases=8,
    heldout_fraction=0.25,
)


FINDINGS = TaskSpec(
    name="findings",
    kind="multilabel",
    classes=("lesion", "bright"),
    referral=Referral(labels=("lesion",)),
    quality_head=False,
)
"""Two findings, either may be present; refer when the first is."""


def _student(task: TaskSpec) -> FundusNet:
    torch.manual_seed(0)
    return build_model("resnet-student", {"width": 4}).for_task_(task)


def _grey(cases: LocalCases) -> LocalCases:
    """The cases in grey, labelled for the glaucoma task (referable DR stands in for it)."""
    grey = PreprocessSpec(size=SIZE, channel_order="L", mean=(0.5,), std=(0.5,))
    images = np.stack([grey.to_channels(img) for img in cases.images])
    labels = (cases.grades >= 2).astype(np.int64)
    return LocalCases(images, labels, PreprocessSpec.fitted(images), GLAUCOMA)


def _device(root: Path, student: FundusNet, spec: PreprocessSpec, rgb: np.ndarray, labels: list):
    """A device root serving ``student``, with RGB reviewed images (the camera's) labelled."""
    slot = root / "slots" / "a"
    save_checkpoint(student, slot / "checkpoint" / "model", name="s", preprocess=spec)
    (root / "current").symlink_to(slot)
    with Store(root / "state.db") as store:
        for image, label in zip(rgb, labels, strict=True):
            case = store.record_screening(user="tech", model_version=1, request={}, result={})
            store.save_case_image(case, image)
            store.record_review(case, user="doc", grade=int(label))


@pytest.fixture
def flower_task(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What a SuperNode sets before it runs a ClientApp (the task's identity), and no
    lowering of the test process's priority."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    monkeypatch.setattr(client, "_lowered", True)
    yield


def _message(kind: str, weights: dict[str, np.ndarray], config: RoundConfig) -> Message:
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({k: Array(np.array(v, order="C")) for k, v in weights.items()}),
            CONFIG: ConfigRecord(config.to_config()),
        }
    )
    return Message(content, dst_node_id=1, message_type=kind)


def _context(root: Path) -> Context:
    return Context(
        run_id=1, node_id=1, node_config={"root": str(root)}, state=RecordDict(), run_config={}
    )


def test_clientapp_trains_and_evaluates_a_grey_binary_task(
    tmp_path: Path, flower_task: None, case_factory: Callable[..., LocalCases]
) -> None:
    rgb = case_factory(32)
    cases = _grey(rgb)
    student = _student(GLAUCOMA)
    _device(tmp_path, student, cases.preprocess, rgb.images, list(cases.grades))
    sent = get_weights(student)

    reply = client.app(_message("train", sent, ROUND), _context(tmp_path))
    metrics = dict(reply.content.metric_records[METRICS])
    assert metrics[M_DECLINED] == 0, reply.content.config_records.get(STATUS)
    trained = {k: a.numpy() for k, a in reply.content.array_records[ARRAYS].items()}
    assert trained.keys() == sent.keys()
    assert trained["head.weight"].shape == (2, sent["head.weight"].shape[1])  # 1 logit + quality
    assert not np.allclose(trained["head.weight"], sent["head.weight"])
    _, meta = load_deployed(tmp_path)
    reviewed = load_reviewed(tmp_path, meta)  # what the ClientApp trained on: grey, this task
    assert reviewed.task == GLAUCOMA and reviewed.images.shape[1:] == (SIZE, SIZE, 1)
    _, heldout = reviewed.split(ROUND.heldout_fraction)
    assert metrics[M_NUM_EXAMPLES] == len(reviewed) - len(heldout)
    assert metrics[M_EVAL_NUM_EXAMPLES] == len(heldout) > 0
    assert metrics[M_EVAL_REFERABLE_POSITIVES] == int(heldout.grades.sum())
    assert 0.0 <= metrics[M_EVAL_ACCURACY] <= 1.0

    reply = client.app(_message("evaluate", trained, ROUND), _context(tmp_path))
    metrics = dict(reply.content.metric_records[METRICS])
    assert metrics[M_DECLINED] == 0, reply.content.config_records.get(STATUS)
    assert metrics[M_EVAL_NUM_EXAMPLES] == len(heldout)
    assert f"deployed-{M_EVAL_REFERABLE_SENSITIVITY}" in metrics
    set_weights(student, trained)
    expected = evaluate_local(student, heldout)
    assert metrics[M_EVAL_ACCURACY] == pytest.approx(expected[M_EVAL_ACCURACY])


def test_a_reviewed_label_outside_the_task_declines_naming_it(
    tmp_path: Path, flower_task: None, case_factory: Callable[..., LocalCases]
) -> None:
    rgb = case_factory(12)
    cases = _grey(rgb)
    labels = [*cases.grades[:-1], 3]  # a DR grade where the binary task has classes 0 and 1
    student = _student(GLAUCOMA)
    _device(tmp_path, student, cases.preprocess, rgb.images, labels)
    reply = client.app(_message("train", get_weights(student), ROUND), _context(tmp_path))
    assert reply.content.metric_records[METRICS][M_DECLINED] == 1
    reason = str(reply.content.config_records[STATUS][S_REASON])
    assert "glaucoma-referral" in reason and "[3]" in reason


def test_amd_task_without_quality_head_trains_towards_its_labels(
    cases: LocalCases,
) -> None:
    amd = LocalCases(cases.images, np.minimum(cases.grades, 3), cases.preprocess, AMD)
    student = _student(AMD)
    teacher = copy.deepcopy(student)
    train, _ = amd.split(ROUND.heldout_fraction)
    x = torch.from_numpy(train.preprocess.normalise(train.images))

    def ce(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            out = model(x)
        assert set(out) == {"amd_logits"}
        return float(F.cross_entropy(out["amd_logits"], torch.from_numpy(train.grades)))

    before = ce(student)
    config = replace(ROUND, local_epochs=4, distill_alpha=0.2, class_balance=0.5)
    weights, metrics = train_local(student, get_weights(student), amd, config, teacher=teacher)
    set_weights(student, weights)
    assert ce(student) < before
    assert np.isfinite(metrics["train-loss"])


def test_local_loss_follows_the_binary_kind() -> None:
    task = GLAUCOMA
    z = torch.tensor([[2.0], [-1.0], [0.5]])
    q = torch.tensor([[1.0], [1.0], [1.0]])
    out = {task.outputs.classes: z, task.outputs.quality: q}
    labels = torch.tensor([1, 0, 0])
    weight = torch.tensor([1.0, 3.0])
    plain = replace(ROUND, distill_alpha=0.0)
    expected = F.binary_cross_entropy_with_logits(
        z.reshape(-1), labels.float(), weight=torch.tensor([3.0, 1.0, 1.0])
    )
    got = local_loss(task, out, None, labels, plain, weight)
    assert float(got) == pytest.approx(float(expected))
    only_teacher = replace(ROUND, distill_alpha=1.0)
    assert float(local_loss(task, out, out, labels, only_teacher)) == pytest.approx(0.0, abs=1e-6)
    moved = {task.outputs.classes: -z, task.outputs.quality: q + 1}
    assert float(local_loss(task, out, moved, labels, only_teacher)) > 1.0


def test_local_evaluation_refers_by_the_task_rule(cases: LocalCases) -> None:
    class Fixed(nn.Module):
        """Says 'referable glaucoma' for the first and last image only."""

        task = GLAUCOMA

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            z = torch.full((len(x), 1), -4.0)
            z[0], z[-1] = 4.0, 4.0
            return {GLAUCOMA.outputs.classes: z, GLAUCOMA.outputs.quality: torch.zeros(len(x), 1)}

    grey = _grey(cases).subset(np.arange(4))
    labelled = LocalCases(grey.images, np.array([1, 1, 0, 0]), grey.preprocess, GLAUCOMA)
    m = evaluate_local(Fixed(), labelled)
    assert m[M_EVAL_REFERABLE_POSITIVES] == 2
    assert m[M_EVAL_REFERABLE_SENSITIVITY] == 0.5  # image 0 found, image 1 missed
    assert m[M_EVAL_ACCURACY] == 0.5  # images 0 and 2 right


def test_cases_refuse_labels_and_tasks_the_device_cannot_train(cases: LocalCases) -> None:
    with pytest.raises(ValueError, match=r"amd-staging: labels \[4\] are outside 0..3"):
        LocalCases(cases.images, cases.grades.clip(4, 4), cases.preprocess, AMD)
    with pytest.raises(ValueError, match=r"labels must be N x 2 of 0/1"):
        LocalCases(cases.images, cases.grades, cases.preprocess, FINDINGS)
    with pytest.raises(ValueError, match="answers task dr-grading"):
        evaluate_local(
            _student_dr(),
            LocalCases(cases.images, cases.grades.clip(0, 3), cases.preprocess, AMD),
        )


def _student_dr() -> FundusNet:
    torch.manual_seed(0)
    return build_model("resnet-student", {"width": 4})


def test_a_multilabel_task_trains_on_the_findings_clinicians_named(
    tmp_path: Path, case_factory: Callable[..., LocalCases]
) -> None:
    rgb = case_factory(32)
    student = _student(FINDINGS)
    slot = tmp_path / "slots" / "a"
    save_checkpoint(student, slot / "checkpoint" / "model", name="s", preprocess=rgb.preprocess)
    (tmp_path / "current").symlink_to(slot)
    named = [["lesion"] * bool(g >= 2) + ["bright"] * bool(g % 2) for g in rgb.grades]
    with Store(tmp_path / "state.db") as store:
        for image, findings in zip(rgb.images, named, strict=True):
            case = store.record_screening(user="tech", model_version=1, request={}, result={})
            store.save_case_image(case, image)
            store.record_review(case, user="doc", grade=None, labels=tuple(findings))
    model, meta = load_deployed(tmp_path)
    cases = load_reviewed(tmp_path, meta)
    want = np.array([[int("lesion" in f), int("bright" in f)] for f in named])
    assert np.array_equal(cases.grades, want)
    before = evaluate_local(model, cases)
    weights, metrics = train_local(model, get_weights(model), cases, ROUND)
    assert np.isfinite(metrics["train-loss"]) and metrics[M_NUM_EXAMPLES] > 0
    set_weights(model, weights)
    after = evaluate_local(model, cases)
    assert after[M_EVAL_REFERABLE_POSITIVES] == want[:, 0].sum()
    assert 0.0 <= after[M_EVAL_ACCURACY] <= 1.0 and after != before
    with Store(tmp_path / "state.db") as store:
        case = store.record_screening(user="tech", model_version=1, request={}, result={})
        store.save_case_image(case, rgb.images[0])
        store.record_review(case, user="doc", grade=None, labels=("haemorrhage",))
    with pytest.raises(Declined, match=r"name findings \['haemorrhage'\]"):
        load_reviewed(tmp_path, meta)
