"""Fixtures for the export tests: a fake distillation run dir holding a tiny trained model."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from server.export import ExportConfig


@pytest.fixture(scope="session")
def tiny_run(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir (student.json/.safetensors + config.yaml) around the tiny trained teacher."""
    run = tmp_path_factory.mktemp("run")
    src = tiny_teacher.parent
    shutil.copy(src / "config.yaml", run / "config.yaml")
    shutil.copy(tiny_teacher, run / "student.json")
    shutil.copy(tiny_teacher.with_suffix(".safetensors"), run / "student.safetensors")
    return run


def _small_config(**over: object) -> ExportConfig:
    base: dict[str, object] = {
        "calibration_size": 64,
        "min_calibration": 16,
        "calibration_methods": ["MinMax"],
        "golden_size": 4,
        "validation_size": 20,
        "heldout_limit": 96,
        "sensitivity_samples": 16,
        "latency_runs": 2,
        "throughput_batch": 4,
        "threads": 1,
    }
    base.update(over)
    return ExportConfig.model_validate(base)


@pytest.fixture(scope="session")
def small_config() -> Callable[..., ExportConfig]:
    """Settings sized for 32 px tests (few images and timing runs, MinMax only), overridable."""
    return _small_config
