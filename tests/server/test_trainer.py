import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from server.distill import run
from server.distill.config import parse_config


def _cfg(data: Path, teacher: Path | None, out: Path, **train: Any) -> Any:
    return parse_config(
        {
            "teacher": str(teacher) if teacher else None,
            "student": {"name": "resnet", "config": {"width": 4, "depths": [1, 1, 1]}},
            "data": {"dir": str(data)},
            "train": {"epochs": 2, "batch_size": 32, "threads": 1, **train},
            "monitor": {"probe_size": 16},
            "out": str(out),
            "bootstrap": 50,
        }
    )


def test_resume_refuses_a_run_directory_with_other_settings(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    run(_cfg(tiny_data, tiny_teacher, tmp_path, epochs=1), log=lambda s: None)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    with pytest.raises(ValueError, match="different settings"):
        run(_cfg(tiny_data, tiny_teacher, tmp_path, lr=0.1), log=lambda s: None)
    # another architecture in the same directory: the same clear message, not a shape error
    other = _cfg(tiny_data, tiny_teacher, tmp_path, epochs=1).model_dump(mode="json")
    other["student"]["config"]["width"] = 8
    with pytest.raises(ValueError, match="different settings"):
        run(parse_config(other), log=lambda s: None)


def test_a_crash_while_saving_leaves_the_previous_state_whole(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.training import state as state_mod

    run(_cfg(tiny_data, tiny_teacher, tmp_path, epochs=1), log=lambda s: None)
    real_replace = state_mod.os.replace

    def die_before_commit(src: Any, dst: Any) -> None:
        if str(dst).endswith("state.json"):
            raise KeyboardInterrupt  # killed after the weights, before the JSON
        real_replace(src, dst)

    monkeypatch.setattr(state_mod.os, "replace", die_before_commit)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tiny_data, tiny_teacher, tmp_path), log=lambda s: None, resume=False)
    monkeypatch.undo()
    info = state_mod.read_info(tmp_path / "checkpoint")
    assert info is not None and info["epoch"] == 1  # still the committed epoch-1 state
    assert (tmp_path / "checkpoint" / info["weights"]).is_file()


def test_resume_after_interruption_matches(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.distill import trainer as trainer_mod

    straight = run(_cfg(tiny_data, tiny_teacher, tmp_path / "a"), log=lambda s: None)
    real_eval = trainer_mod.Trainer._evaluate
    calls = {"n": 0}

    def crash_after_first_epoch(self: Any, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the process died during epoch 2's evaluation
        real_eval(self, *args)

    monkeypatch.setattr(trainer_mod.Trainer, "_evaluate", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tiny_data, tiny_teacher, tmp_path / "b"), log=lambda s: None)
    monkeypatch.setattr(trainer_mod.Trainer, "_evaluate", real_eval)
    logs: list[str] = []
    resumed = run(_cfg(tiny_data, tiny_teacher, tmp_path / "b"), log=logs.append)
    assert any("resuming" in line and "after epoch 1" in line for line in logs)
    a = load_file(str(straight.checkpoint.with_suffix(".safetensors")))
    b = load_file(str(resumed.checkpoint.with_suffix(".safetensors")))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b" / "monitor.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines if '"eval"' in x] == [1, 2]


def test_run_directory_holds_what_the_design_says(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    out = run(_cfg(tiny_data, tiny_teacher, tmp_path), log=lambda s: None)
    for name in (
        "config.yaml",
        "metrics.json",
        "monitor.jsonl",
        "student.safetensors",
        "student.json",
        "plots/monitors.png",
    ):
        assert (tmp_path / name).is_file(), name
    m = out.metrics
    assert m["teacher"]["parameters"] > m["student"]["parameters"]
    assert set(m["paired"]["student_minus_teacher"]) >= {"accuracy", "kappa", "referable_auc"}
    acc = m["student"]["test"]["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"]
    meta = json.loads((tmp_path / "student.json").read_text())
    assert meta["lineage"][0]["name"] == "teacher"


def test_mixed_precision_runs_under_bf16_autocast(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.dtype | None] = []
    real = torch.autocast

    def spy(device_type: str, dtype: torch.dtype | None = None, **kw: Any) -> Any:
        seen.append(dtype)
        return real(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    cfg = _cfg(tiny_data, tiny_teacher, tmp_path, precision="mixed", epochs=1)
    assert run(cfg, log=lambda s: None).checkpoint.is_file()
    assert seen and set(seen) == {torch.bfloat16}


def test_cached_teacher_outputs_train_a_student(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    cfg = parse_config(
        {
            **_cfg(tiny_data, tiny_teacher, tmp_path, epochs=1).model_dump(mode="json"),
            "train": {"epochs": 1, "batch_size": 32, "threads": 1, "cache_teacher": True},
            "loss": {"feature_weight": 0.0},
            "monitor": {"enabled": False},
        }
    )
    out = run(cfg, log=lambda s: None)
    assert out.checkpoint.is_file() and out.metrics["paired"]["split"] == "test"


@pytest.mark.gpu
def test_fp16_autocast_on_cuda(tiny_data: Path, tiny_teacher: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_data, tiny_teacher, tmp_path, precision="mixed", epochs=1, device="cuda")
    out = run(cfg, log=lambda s: None)
    assert out.metrics["student"]["val"]["accuracy"]["value"] > 0


@pytest.mark.slow
def test_torchrun_two_processes_train_one_student(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    cfg = _cfg(tiny_data, tiny_teacher, tmp_path / "ddp", epochs=1)
    path = tmp_path / "ddp.yaml"
    path.write_text(__import__("yaml").safe_dump(cfg.model_dump(mode="json")))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "server",
        "distill",
        str(path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["student"]["parameters"] > 0
    # each process took half of every batch: the same steps per epoch as one process
    steps = json.loads((tmp_path / "ddp" / "monitor.jsonl").read_text().splitlines()[0])["step"]
    assert steps == len_train(tiny_data) // 32


def len_train(data: Path) -> int:
    from server.distill.config import DataConfig
    from server.training.data import load_splits

    return len(load_splits(DataConfig(dir=data), 0).train)
