"""Teachers and students by source through the distillation: Hugging Face, ONNX, your own code."""

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from server.cli import app
from server.distill import run
from server.distill.config import parse_config
from server.training import ConfigError, ModelRef

runner = CliRunner()


def _vit(path: Path, hidden: int, layers: int, heads: int) -> Path:
    config = {
        "model_type": "vit",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 2 * hidden,
        "image_size": 32,
        "patch_size": 8,
    }
    path.write_text(json.dumps(config))
    return path


def _cfg(data: Path, out: Path, teacher: Any, student: dict[str, Any], **extra: Any) -> Any:
    return parse_config(
        {
            "teacher": teacher,
            "student": student,
            "data": {"dir": str(data), "limit": 256, "test_site": None},
            "train": {"epochs": 1, "batch_size": 32, "threads": 1},
            "monitor": {"probe_size": 16, "warmup_epochs": 0},
            "out": str(out),
            "bootstrap": 0,
            **extra,
        }
    )


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers not installed"
)
def test_a_hf_vit_distils_into_a_smaller_one_with_features_and_monitors(
    tiny_data: Path, tmp_path: Path
) -> None:
    teacher = _vit(tmp_path / "teacher.json", 32, 4, 4)
    student = _vit(tmp_path / "student.json", 16, 2, 2)
    logs: list[str] = []
    cfg = _cfg(tiny_data, tmp_path / "run", f"hf:{teacher}", {"name": f"hf:{student}"})
    outcome = run(cfg, log=logs.append)
    record = outcome.metrics["training"]
    assert record["layer_map"]  # feature distillation between the two ViTs' layers
    # transformer layers (``encoder.layer.i`` or ``layers.i``, by transformers version)
    assert all("layer" in k for k in [*record["layer_map"], *record["layer_map"].values()])
    history = [
        json.loads(line) for line in (tmp_path / "run" / "monitor.jsonl").read_text().splitlines()
    ]
    assert 0.0 <= history[0]["retention"] <= 1.0 and "cka" in history[0]
    meta = json.loads(outcome.checkpoint.read_text())
    assert meta["family"] == "hf" and meta["lineage"][0]["name"] == f"hf:{teacher}"


def test_an_onnx_teacher_distils_logits_only(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    from models.nets import load_checkpoint
    from server.export import export_onnx

    model, meta = load_checkpoint(tiny_teacher)
    onnx_path = export_onnx(model, meta.preprocess.size, tmp_path / "teacher.onnx")
    logs: list[str] = []
    student = {"name": "resnet", "config": {"width": 4, "depths": [1, 1, 1]}}
    cfg = _cfg(tiny_data, tmp_path / "run", f"onnx:{onnx_path}", student)
    assert isinstance(cfg.teacher, ModelRef)
    outcome = run(cfg, log=logs.append)
    assert any("no feature taps" in line for line in logs)
    assert outcome.metrics["training"]["layer_map"] == {}
    assert outcome.metrics["teacher"]["file_bytes"] == onnx_path.stat().st_size
    assert outcome.metrics["student"]["val"]["accuracy"]["value"] > 0


def test_an_onnx_teacher_whose_outputs_do_not_fit_the_task_is_named(
    tiny_teacher: Path, tmp_path: Path
) -> None:
    from models import SourceError, load_task
    from models.nets import build_model, load_checkpoint
    from server.export import export_onnx

    model, meta = load_checkpoint(tiny_teacher)  # DR grading: grade_logits, gradable_logit
    onnx_path = export_onnx(model, meta.preprocess.size, tmp_path / "teacher.onnx")
    glaucoma = load_task(Path(__file__).parents[2] / "configs" / "tasks" / "glaucoma-referral.yaml")
    teacher = build_model(f"onnx:{onnx_path}")
    with pytest.raises(
        SourceError,
        match=r"outputs \['grade_logits', 'gradable_logit'\]; a teacher "
        r"for task glaucoma-referral needs glaucoma_logit and gradable_logit",
    ):
        teacher.for_task_(glaucoma)


def test_an_onnx_model_is_never_a_student(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="onnx: models are teachers only"):
        _cfg(tmp_path, tmp_path, None, {"name": f"onnx:{tmp_path / 'm.onnx'}"})


def test_a_checkpoint_path_stays_a_path(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tmp_path, "runs/teacher/teacher.json", {"name": "resnet-student"})
    assert cfg.teacher == Path("runs/teacher/teacher.json")


def test_your_own_module_as_teacher_and_student_through_the_cli(
    tiny_data: Path, tmp_path: Path, user_package: Path
) -> None:
    teacher_dir = tmp_path / "teacher"
    args = ["teacher", "train", "--data", str(tiny_data), "--out", str(teacher_dir)]
    result = runner.invoke(app, [*args, "--model", "module:tinynets:make", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    teacher = json.loads((teacher_dir / "teacher.json").read_text())
    assert teacher["family"] == "module" and teacher["config"]["factory"] == "tinynets:make"
    config = {
        "teacher": str(teacher_dir / "teacher.json"),
        "student": {"name": "module:tinynets:make", "config": {"kwargs": {"width": 2}}},
        "data": {"dir": str(tiny_data), "limit": 256},
        "train": {"epochs": 1, "batch_size": 32, "threads": 1},
        "monitor": {"probe_size": 16},
        "out": str(tmp_path / "student"),
        "bootstrap": 0,
    }
    (tmp_path / "distill.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["distill", str(tmp_path / "distill.yaml")])
    assert result.exit_code == 0, result.output
    student = json.loads((tmp_path / "student" / "student.json").read_text())
    assert student["config"]["kwargs"] == {"width": 2}
    assert student["lineage"][0]["family"] == "module"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("hugginface:vit.json", "unknown model source kind 'hugginface'"),
        ("module:tinynets:maek", "has no callable 'maek'"),
        ("module:tinynets", "expected module:package.module:factory"),
    ],
)
def test_teacher_train_names_a_bad_source(
    tiny_data: Path, tmp_path: Path, user_package: Path, model: str, message: str
) -> None:
    args = ["teacher", "train", "--data", str(tiny_data), "--out", str(tmp_path / "t")]
    result = runner.invoke(app, [*args, "--model", model, "--epochs", "1"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
