"""Multi-teacher distillation: soft targets mixed per image by a learned router, or averaged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from models.nets import build_model, load_checkpoint
from models.preprocess import PreprocessSpec
from server.distill.config import Schedule
from server.distill.routing import (
    RoutedTeacher,
    Router,
    RouterConfig,
    distil_multi_teacher,
    train_router,
)
from server.training import TrainingData
from server.training.data import load_splits

SMALL = {"width": 4, "depths": [1, 1, 1]}


def _teachers() -> list[Any]:
    torch.manual_seed(0)
    return [build_model("resnet", SMALL).eval() for _ in range(3)]


@pytest.fixture(scope="module")
def data(tiny_data: Path, distill_config: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = distill_config(tiny_data, None, tmp_path_factory.mktemp("r"))
    splits = load_splits(cfg.data, 0)
    return TrainingData(PreprocessSpec.fitted(splits.train.images), splits.train, splits.val)


def test_the_mixture_at_temperature_is_exact() -> None:
    teachers, t = _teachers(), 3.0
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        mixed = RoutedTeacher(teachers, None, t)(x)
        outs = [m(x) for m in teachers]
    soft = torch.stack([torch.softmax(o["grade_logits"] / t, 1) for o in outs]).mean(0)
    # the trainer's softmax(logits / T) of the wrapped teacher gives back the averaged targets
    torch.testing.assert_close(torch.softmax(mixed["grade_logits"] / t, 1), soft)
    gsoft = torch.stack([torch.sigmoid(o["gradable_logit"] / t) for o in outs]).mean(0)
    torch.testing.assert_close(torch.sigmoid(mixed["gradable_logit"] / t), gsoft)


def test_a_router_that_picks_one_teacher_gives_that_teachers_targets() -> None:
    teachers = _teachers()
    router = Router(3)
    with torch.no_grad():
        router.logits.weight.zero_()
        router.logits.bias.copy_(torch.tensor([-50.0, 50.0, -50.0]))
        x = torch.randn(2, 3, 32, 32)
        mixed = RoutedTeacher(teachers, router, 2.0)(x)
        want = torch.softmax(teachers[1](x)["grade_logits"] / 2.0, 1)
    torch.testing.assert_close(torch.softmax(mixed["grade_logits"] / 2.0, 1), want)


def test_the_router_learns_to_trust_the_teacher_that_knows(data: Any, tiny_teacher: Path) -> None:
    good = load_checkpoint(tiny_teacher)[0]
    bad = _teachers()[:2]  # untrained
    router = train_router([bad[0], good, bad[1]], data, RouterConfig(epochs=2, batch_size=32))
    x = torch.from_numpy(data.spec.normalise(data.val.images[:64]))
    with torch.no_grad():
        w = router(x).mean(0)
    assert int(w.argmax()) == 1 and float(w[1]) > 0.5


def test_the_balancing_term_keeps_every_teacher_in_use(data: Any, tiny_teacher: Path) -> None:
    good = load_checkpoint(tiny_teacher)[0]
    bad = _teachers()[:2]
    x = torch.from_numpy(data.spec.normalise(data.val.images[:64]))
    mean = {}
    for balance in (0.0, 10.0):
        cfg = RouterConfig(epochs=2, batch_size=32, balance=balance)
        router = train_router([bad[0], good, bad[1]], data, cfg)
        with torch.no_grad():
            mean[balance] = router(x).mean(0)
    assert float(mean[10.0].min()) > 0.2  # near 1/3 each
    assert float(mean[10.0][1]) < float(mean[0.0][1])
    with pytest.raises(ValueError, match="router"):
        RouterConfig(balance=-1.0)


def test_routed_and_averaged_distillation_train_the_student(
    data: Any, tiny_teacher: Path, distill_config: Any, tmp_path: Path
) -> None:
    cfg = distill_config(
        Path("unused"), None, tmp_path, train={"epochs": 1, "batch_size": 32, "threads": 1}
    )
    good = load_checkpoint(tiny_teacher)[0]
    teachers = [good, _teachers()[0]]
    for mode in ("routed", "averaged"):
        torch.manual_seed(0)
        student = build_model("resnet", SMALL)
        before = {k: v.clone() for k, v in student.state_dict().items()}
        out = distil_multi_teacher(
            student, teachers, data, cfg, mode=mode, router=RouterConfig(epochs=1, batch_size=32)
        )
        assert out.student is student and out.mode == mode
        assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
        assert 0.0 <= out.val["accuracy"] <= 1.0 and len(out.mean_weights) == 2
        assert sum(out.mean_weights) == pytest.approx(1.0, abs=1e-5)
        if mode == "averaged":
            assert out.mean_weights == pytest.approx([0.5, 0.5])


def test_a_temperature_schedule_is_refused(data: Any, distill_config: Any, tmp_path: Path) -> None:
    cfg = distill_config(Path("unused"), None, tmp_path)
    cfg = cfg.model_copy(
        update={"loss": cfg.loss.model_copy(update={"temperature": Schedule(start=4, end=2)})}
    )
    with pytest.raises(ValueError, match="constant"):
        distil_multi_teacher(build_model("resnet", SMALL), _teachers(), data, cfg, mode="averaged")


def test_multi_teacher_step_compares_both_modes(
    data: Any, tiny_teacher: Path, distill_config: Any, tmp_path: Path
) -> None:
    from server.compress.steps import StepContext, run_step

    cfg = distill_config(
        Path("unused"), None, tmp_path, train={"epochs": 1, "batch_size": 32, "threads": 1}
    )
    ctx = StepContext(data=data, teacher=None, distill=cfg, out_dir=tmp_path, log=lambda s: None)
    settings = {"teachers": [str(tiny_teacher), str(tiny_teacher)], "mode": "compare"}
    result = run_step("multi_teacher", build_model("resnet", SMALL), ctx, settings)
    assert {"routed", "averaged"} <= set(result.details)
    chosen = result.details["chosen"]
    assert result.metrics == result.details[chosen]["val"]
    with pytest.raises(ValueError):
        run_step("multi_teacher", build_model("resnet", SMALL), ctx, {"teachers": []})
