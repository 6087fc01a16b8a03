"""Export config: unknown keys and impossible settings are errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.export import ExportConfig, load_export_config, parse_export_config
from server.export.config import ExportConfigError


def test_defaults_follow_the_design() -> None:
    cfg = ExportConfig()
    assert cfg.opset == 17
    assert cfg.budget == 1.0
    assert cfg.precisions == ["fp32", "fp16", "int8", "int8dyn"]
    assert cfg.calibration_methods == ["MinMax", "Entropy", "Percentile"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "export.yaml"
    path.write_text("budget: 0.5\nbudjet: 2\n")
    with pytest.raises(
        ExportConfigError, match=r"export.yaml: invalid export config\n  unknown key 'budjet'"
    ):
        load_export_config(path)


def test_fp32_must_be_exported() -> None:
    with pytest.raises(ExportConfigError, match="fp32"):
        parse_export_config({"precisions": ["int8"]})


def test_opset_above_tensorrt_85_is_refused() -> None:
    with pytest.raises(ExportConfigError, match="opset"):
        parse_export_config({"opset": 18})
