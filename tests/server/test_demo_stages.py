"""The demo's declared stages: budgets within 15 minutes, and its compression config valid."""

from __future__ import annotations

from pathlib import Path

from server.demo import BUDGET_SECONDS, compress_config, student_config


def test_stage_budgets_add_up_to_under_15_minutes() -> None:
    assert list(BUDGET_SECONDS)[:5] == ["data", "teacher", "distill", "compress", "export"]
    assert sum(BUDGET_SECONDS.values()) < 15 * 60


def test_the_compress_stage_fine_tunes_the_student_with_qat(tmp_path: Path) -> None:
    cfg = compress_config(tmp_path)
    assert [s.kind for s in cfg.steps] == ["qat"]
    assert cfg.start == tmp_path / "student" / "student.json"
    assert cfg.teacher == tmp_path / "teacher" / "teacher.json"
    assert cfg.out == tmp_path / "compress"
    # the student's own data and loss settings, one epoch, no search
    student = student_config(tmp_path)
    assert cfg.distill.data.dir == student.data.dir
    assert cfg.distill.loss == student.loss
    assert cfg.distill.train.epochs == 1 and not cfg.distill.search.enabled
