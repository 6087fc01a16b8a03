"""``fovea compress`` end to end on tiny data: steps, checkpoints, resume, report, QAT export."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import onnx
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from models.nets import count_parameters, load_checkpoint
from server.cli import app
from server.export import ExportConfig, export
from server.export.report import print_export_summary
from server.export.run import ExportInputError


def _config(tiny_data: Path, teacher: Path, out: Path) -> dict[str, object]:
    return {
        "teacher": str(teacher),
        "start": {"model": {"name": "resnet", "config": {"width": 8, "depths": [2, 1, 1]}}},
        "distill": {
            "data": {"dir": str(tiny_data)},
            "train": {"epochs": 1, "batch_size": 32, "threads": 1},
            "monitor": {"enabled": False},
            "loss": {"feature_weight": 0.0},
            "bootstrap": 0,
        },
        "steps": [
            {"kind": "distill"},
            {
                "kind": "reduce_layers",
                "max_removals": 1,
                "min_retention": 0.01,
                "choice_images": 32,
                "latency_runs": 1,
            },
            {"kind": "prune_channels", "ratio": 0.5, "latency_runs": 1},
            {"kind": "qat", "epochs": 1},
        ],
        "out": str(out),
        "latency_runs": 1,
    }


EXPORT = {
    "precisions": ["fp32", "int8"],
    "int8_source": "qat",
    "golden_size": 4,
    "validation_size": 16,
    "heldout_limit": 64,
    "latency_runs": 1,
    "throughput_batch": 4,
    "threads": 1,
}


@pytest.mark.slow
def test_compress_runs_resumes_and_exports_the_qat_model(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    path = tmp_path / "compress.yaml"
    path.write_text(yaml.safe_dump(_config(tiny_data, tiny_teacher, out)))
    runner = CliRunner()
    first = runner.invoke(app, ["compress", str(path)])
    assert first.exit_code == 0, first.output
    report = json.loads((out / "report.json").read_text())
    assert [s["kind"] for s in report["steps"]] == [
        "distill",
        "reduce_layers",
        "prune_channels",
        "qat",
    ]
    params = [s["parameters"] for s in report["steps"]]
    assert params[1] < params[0] and params[2] < 0.5 * params[1] and params[3] == params[2]
    assert {"parameters", "accuracy", "latency_ms"} <= set(report["curve"][-1])
    assert "referable_sensitivity" in report["student"]["test"]
    for name in ("report.md", "curve.png", "student.json", "model.qat.onnx", "config.yaml"):
        assert (out / name).is_file(), name
    model, meta = load_checkpoint(out / "student.json")
    assert meta.resized and count_parameters(model) == params[-1]
    assert meta.lineage[-1].name == "teacher"

    # resume: every finished step is reused, none retrained
    second = runner.invoke(app, ["compress", str(path)])
    assert second.exit_code == 0, second.output
    assert second.output.count("done before") == 4

    # a changed last step reruns that step only
    cfg = _config(tiny_data, tiny_teacher, out)
    cfg["steps"][-1] = {"kind": "qat", "epochs": 1, "lr_scale": 0.05}  # type: ignore[index]
    path.write_text(yaml.safe_dump(cfg))
    third = runner.invoke(app, ["compress", str(path)])
    assert third.exit_code == 0, third.output
    assert third.output.count("done before") == 3

    # the export stage takes the QAT model as its INT8 model
    result = export(out, tmp_path / "export", ExportConfig.model_validate(EXPORT))
    int8 = onnx.load(str(result.out / "model.int8.onnx"))
    assert "QuantizeLinear" in {n.op_type for n in int8.graph.node}
    assert result.report["int8"]["method"] == "qat"
    assert result.report["precisions"]["int8"]["parity"]["passed"]
    assert (result.out / "int8_ranges.json").is_file()
    shown = Console(file=io.StringIO(), width=120)
    print_export_summary(result.report, str(result.out), shown)  # what the CLI and demo print
    assert "INT8: the QAT model" in shown.file.getvalue()  # type: ignore[attr-defined]

    # without the QAT file the export says what to do
    (out / "model.qat.onnx").unlink()
    with pytest.raises(ExportInputError, match="int8_source is qat"):
        export(out, tmp_path / "export2", ExportConfig.model_validate(EXPORT))
    shutil.rmtree(out)


def test_compress_cli_names_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"teacher": "t.json", "steps": [{"kind": "qat", "epoch": 2}]}))
    result = CliRunner().invoke(app, ["compress", str(path)])
    assert result.exit_code == 2
    assert "epoch" in result.output and "step 1 (qat)" in result.output


def test_resume_key_changes_with_the_start_weights_and_base_settings(tmp_path: Path) -> None:
    """A retrained start model (same path, new weights) or new base settings start over."""
    from server.compress.config import parse_compress_config
    from server.compress.pipeline import run_key, step_key

    start = tmp_path / "student.json"
    start.write_text("{}")
    start.with_suffix(".safetensors").write_bytes(b"weights v1")
    raw = {"start": str(start), "steps": [{"kind": "qat", "epochs": 1}], "out": str(tmp_path)}
    cfg = parse_compress_config(raw)
    key = run_key(cfg)
    assert run_key(parse_compress_config({**raw, "out": str(tmp_path / "elsewhere")})) == key
    step = cfg.steps[0]
    assert step_key(step, key) == step_key(step, run_key(cfg))

    start.with_suffix(".safetensors").write_bytes(b"weights v2")
    assert run_key(cfg) != key
    start.with_suffix(".safetensors").write_bytes(b"weights v1")
    assert run_key(cfg) == key
    other = parse_compress_config({**raw, "distill": {"train": {"epochs": 9}}})
    assert run_key(other) != key
    assert step_key(step, run_key(other)) != step_key(step, key)
