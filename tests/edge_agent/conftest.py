"""Fixtures for the edge agent's tests: a real export directory made from a tiny real model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_export(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete ``fovea export`` directory of a tiny 32 px model trained for one epoch.

    It holds model.{fp32,fp16,int8,int8dyn}.onnx, golden.npz, validation.npz, export.json,
    recipe.json, int8_ranges.json and calibration.cache, exactly as the export stage writes
    them (small settings: MinMax calibration, few images and timing runs). Treat it as
    read-only; copy it (``shutil.copytree``) before changing anything.
    """
    from server.export import ExportConfig, export

    run = tmp_path_factory.mktemp("edge-run")
    src = tiny_teacher.parent
    shutil.copy(src / "config.yaml", run / "config.yaml")
    shutil.copy(tiny_teacher, run / "student.json")
    shutil.copy(tiny_teacher.with_suffix(".safetensors"), run / "student.safetensors")
    config = ExportConfig.model_validate(
        {
            "calibration_size": 64,
            "min_calibration": 16,
            "calibration_methods": ["MinMax"],
            "golden_size": 4,
            "validation_size": 48,
            "heldout_limit": 64,
            "sensitivity_samples": 16,
            "max_excluded": 2,
            "latency_runs": 1,
            "throughput_batch": 4,
            "threads": 1,
        }
    )
    out = tmp_path_factory.mktemp("edge-export") / "export"
    return export(run, out, config).out
