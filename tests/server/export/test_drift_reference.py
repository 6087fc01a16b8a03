"""The export writes the bundle's drift reference, the bundle carries it, the device reads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deploy.bundle import collect_files
from edge_agent.drift import REFERENCE_FILE, DriftMonitor, DriftSettings, read_reference
from server.export import ExportConfig, export


@pytest.fixture(scope="module")
def exported(
    tiny_run: Path,
    small_config: Callable[..., ExportConfig],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("drift") / "export"
    return export(tiny_run, out, small_config(validation_size=40)).out


def test_the_export_writes_a_reference_the_device_reads(exported: Path) -> None:
    reference, note = read_reference(exported)
    assert reference is not None, note
    assert reference.images == 40 and reference.source == "validation: 40 images"
    assert 0.05 < reference.brightness.mean < 0.95 and reference.brightness.std > 0
    assert np.isfinite(reference.sharpness.mean) and reference.sharpness.std > 0
    assert 0 <= reference.retake_rate < 1
    graded = round(reference.images * (1 - reference.retake_rate))
    assert reference.grade_distribution is not None and len(reference.grade_distribution) == 5
    if graded:
        assert sum(reference.grade_distribution) == pytest.approx(1.0)
        assert reference.referral_rate is not None and reference.confidence is not None
        assert 0.2 <= reference.confidence.mean <= 1.0
    # calibrated at export for the agent's default settings: the device does not simulate
    assert reference.thresholds is not None and reference.calibration is not None
    monitor = DriftMonitor(reference, None, "b", DriftSettings())
    assert monitor.thresholds == reference.thresholds


def test_the_bundle_carries_the_reference(exported: Path) -> None:
    files = collect_files(exported)
    assert REFERENCE_FILE in files and files[REFERENCE_FILE].size > 0
