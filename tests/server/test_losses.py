import math

import pytest
import torch

from server.distill.losses import distillation_loss, gradable_loss, soft_target_loss


def _hand_kl(s: list[float], t: list[float], temp: float) -> float:
    def sm(v: list[float]) -> list[float]:
        e = [math.exp(x / temp) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = sm(s), sm(t)
    return sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))


def test_loss_matches_hand_computation() -> None:
    s = [[1.0, 0.5, -0.3, 0.0, 2.0], [0.2, 0.1, 0.0, -1.0, 0.3]]
    t = [[2.0, 0.0, 0.0, 0.5, 1.0], [0.0, 1.5, 0.2, 0.0, -0.5]]
    y = [4, 1]
    alpha, temp = 0.7, 3.0
    kl = sum(_hand_kl(a, b, temp) for a, b in zip(s, t, strict=True)) / 2
    ce = (
        sum(
            -math.log(math.exp(row[c]) / sum(math.exp(v) for v in row))
            for row, c in zip(s, y, strict=True)
        )
        / 2
    )
    expected = alpha * temp**2 * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha, temp)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(soft_target_loss(torch.tensor(s), torch.tensor(t), temp)) == pytest.approx(
        temp**2 * kl, rel=1e-5
    )


def test_unknown_grades_are_ignored_and_no_teacher_is_plain_ce() -> None:
    s = torch.tensor([[3.0, 0, 0, 0, 0], [0, 0, 0, 0, 9.0]])
    both = distillation_loss(s, None, torch.tensor([0, -1]), 0.5, 2.0)
    one = distillation_loss(s[:1], None, torch.tensor([0]), 0.5, 2.0)
    assert float(both) == pytest.approx(float(one))
    none = distillation_loss(s, None, torch.tensor([-1, -1]), 0.5, 2.0)
    assert float(none) == 0.0


def test_gradable_soft_term_vanishes_when_student_equals_teacher() -> None:
    logit = torch.tensor([[1.5], [-0.7]])
    target = torch.tensor([1.0, 0.0])
    hard = gradable_loss(logit, None, target, 0.0, 2.0)
    mixed = gradable_loss(logit, logit, target, 0.5, 2.0)
    assert float(mixed) == pytest.approx(0.5 * float(hard), abs=1e-6)


def test_multilabel_rows_of_minus_one_teach_nothing() -> None:
    import numpy as np

    from models import TaskSpec
    from models.datasets import FundusArrays
    from models.task import Referral
    from server.distill.losses import Mix, task_loss
    from server.training import loss_targets

    task = TaskSpec(
        name="f",
        kind="multilabel",
        classes=("a", "b"),
        referral=Referral(labels=("a",)),
        quality_head=False,
    )
    arrays = FundusArrays(
        images=np.zeros((3, 4, 4, 3), np.uint8),
        grade=np.array([0, -1, 0]),
        gradable=np.array([True, False, True]),
        site=np.array(["s"] * 3),
        patient=np.array(["p", "q", "r"]),
        labels=np.array([[1, 0], [1, 1], [0, 1]], np.uint8),
    )
    targets = torch.from_numpy(loss_targets(arrays, task))
    assert targets[1].tolist() == [-1.0, -1.0]
    logits = torch.tensor([[2.0, -1.0], [9.0, -9.0], [0.5, 0.3]])
    mix = Mix(alpha=0.0, temperature=1.0, quality_weight=0.0)
    loss = task_loss(task, {task.outputs.classes: logits}, None, targets, torch.ones(3), mix)
    kept = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2]], targets[[0, 2]])
    assert loss.item() == pytest.approx(kept.item())
