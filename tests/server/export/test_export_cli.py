"""``fovea export``: the table and the path on success, one clear line on bad input."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from server.cli import app

runner = CliRunner()


def test_export_prints_table_and_path(tiny_run: Path, tmp_path: Path) -> None:
    config = tmp_path / "export.yaml"
    config.write_text(
        "calibration_size: 48\nmin_calibration: 16\ncalibration_methods: [MinMax]\n"
        "heldout_limit: 64\nlatency_runs: 2\nthroughput_batch: 4\nthreads: 1\n"
    )
    out = tmp_path / "exp"
    result = runner.invoke(
        app,
        [
            "export",
            str(tiny_run),
            "--out",
            str(out),
            "--config",
            str(config),
            "--precisions",
            "fp32,int8",
            "--budget",
            "2",
        ],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    assert "int8" in result.output and "TensorRT" in result.output
    assert f"wrote {out}" in " ".join(result.output.split())
    assert (out / "model.int8.onnx").is_file() and not (out / "model.fp16.onnx").exists()


def test_export_of_a_non_run_dir_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2
    assert "no student checkpoint" in result.output
    assert "Traceback" not in result.output
