"""The suite's merged results: latest.json / latest.md, the README table, the GPU section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import readme_table, run
from benchmarks.headline import headline_rows, markdown_table

MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "gpu": None, "date": "2026-01-02 03:04"}


def _fake_results(results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    export = {
        "benchmark": "export_acceptance",
        "machine": MACHINE,
        "rows": {
            "teacher (PyTorch fp32)": {
                "accuracy": 74.7,
                "latency_ms_batch1": 3.5,
                "throughput_img_s": 629.0,
                "throughput_batch": 32,
                "throughput_ratio_vs_first": 1.0,
            },
            "student int8 (ORT)": {
                "accuracy": 71.4,
                "latency_ms_batch1": 0.27,
                "size_bytes": 92826,
                "throughput_img_s": 4638.0,
                "throughput_batch": 32,
                "throughput_ratio_vs_first": 7.4,
            },
        },
    }
    federation = {
        "benchmark": "federation_acceptance",
        "machine": {**MACHINE, "cores": 16},
        "codecs": {"fp16": {"bytes_per_client_round": 157020.0}},
        "rounds_to_target": {"target_mean_accuracy": 65.6, "fedavg": 3, "fedprox": 2},
    }
    for payload in (export, federation):
        (results / f"{payload['benchmark']}.json").write_text(json.dumps(payload))
        (results / f"{payload['benchmark']}.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")


def test_headline_table_names_every_comparison_and_the_machine(tmp_path: Path) -> None:
    _fake_results(tmp_path)
    written = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    latest = run.merge(
        None, written, {"agent_load": "exit status 1"}, quick=False, keep_previous=False
    )
    latest["machine"] = MACHINE
    json_path, md_path = run.write_latest(latest, tmp_path)
    assert set(json.loads(json_path.read_text())["benchmarks"]) == {
        "export_acceptance",
        "federation_acceptance",
    }
    md = md_path.read_text()
    assert "Machine: Test CPU 9000, 2 cores, no GPU; run 2026-01-02 03:04" in md
    assert "student int8 (ORT)" in md and "7.4x the teacher" in md and "93 kB" in md
    assert "codec fp16 | 157,020" in md and "FedAvg 3, FedProx 2" in md
    assert "FAILED: exit status 1" in md
    assert "`federation_acceptance` ran on another machine" in md  # 16 cores there
    assert "## export_acceptance" in md  # the full tables follow the headline table


def test_unknown_benchmark_keeps_a_pointer_row() -> None:
    rows = headline_rows({"benchmarks": {"compress_x_quick": {"whatever": 1}}})
    assert rows == [
        [
            "compress_x: see benchmarks/results/compress_x_quick.md",
            "(no headline)",
            "compress_x_quick",
        ]
    ]


def test_readme_table_replaces_only_the_marked_block(tmp_path: Path) -> None:
    latest = {"machine": MACHINE, "benchmarks": {"gpu": {"skipped": "skipped: no GPU"}}}
    (tmp_path / "latest.json").write_text(json.dumps(latest))
    readme = tmp_path / "README.md"
    readme.write_text(
        "# X\n\n## Benchmarks\n\n<!-- bench:start -->\n| old |\n<!-- bench:end -->\n\nafter\n"
    )
    args = ["--latest", str(tmp_path / "latest.json"), "--readme", str(readme)]
    assert readme_table.main([*args, "--check"]) == 1
    assert readme_table.main(args) == 0
    text = readme.read_text()
    assert "| old |" not in text and text.endswith("<!-- bench:end -->\n\nafter\n")
    assert "Test CPU 9000, 2 cores, no GPU" in text and "skipped: no GPU" in text
    assert readme_table.main([*args, "--check"]) == 0
    readme.write_text("no markers")
    assert readme_table.main(args) == 2


def test_the_repository_readme_has_the_markers() -> None:
    text = readme_table.README.read_text()
    assert text.index(readme_table.START) < text.index(readme_table.END)


def test_only_gpu_runs_for_real_and_keeps_earlier_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run.py --quick --only gpu``: the real GPU benchmark (skipped on a CPU machine), merged."""
    _fake_results(tmp_path)
    earlier = {"machine": MACHINE, "benchmarks": {"export_acceptance": {"rows": {}}}}
    (tmp_path / "latest.json").write_text(json.dumps(earlier))
    monkeypatch.setenv("FOVEA_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    assert run.main(["--quick", "--only", "gpu"]) == 0
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert set(latest["benchmarks"]) == {"export_acceptance", "gpu_quick"}
    assert latest["machine"]["cores"] >= 1 and "date" in latest["machine"]
    gpu = latest["benchmarks"]["gpu_quick"]
    if latest["machine"]["gpu"] is None:
        assert gpu["skipped"] == "skipped: no GPU"
        assert "skipped: no GPU" in (tmp_path / "latest.md").read_text()
    else:
        assert gpu["rows"]


def test_reuse_takes_an_earlier_result_from_another_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--only gpu --reuse federation_acceptance``: the reused result is merged as written and
    the table says which machine it came from; reusing a missing result is a failure."""
    _fake_results(tmp_path)
    (tmp_path / "federation_acceptance.json").rename(tmp_path / "federation_acceptance_quick.json")
    monkeypatch.setenv("FOVEA_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    args = ["--quick", "--only", "gpu", "--reuse", "federation_acceptance"]
    assert run.main(args) == 0
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["benchmarks"]["federation_acceptance_quick"]["machine"]["cores"] == 16
    table = (tmp_path / "latest.md").read_text()
    assert "FedAvg 3, FedProx 2" in table
    assert "`federation_acceptance_quick` is reused from an earlier run" in table
    assert latest["reused"] == ["federation_acceptance_quick"]
    assert run.main(["--quick", "--only", "gpu", "--reuse", "export_acceptance"]) == 1
    assert "export_acceptance" in json.loads((tmp_path / "latest.json").read_text())["failed"]
    with pytest.raises(SystemExit):
        run.main(["--reuse", "no_such_benchmark"])


def test_markdown_table_of_an_empty_run() -> None:
    assert "| comparison | result | benchmark |" in markdown_table({})


def test_compression_and_scale_results_have_headlines() -> None:
    compress = {
        "parameter_ratio": 0.0496,
        "accuracy_retention": 0.975,
        "referable_sensitivity_difference_points": -1.2,
        "int8": {"qat_int8_heldout_accuracy": 74.5, "ptq_int8_heldout_accuracy": 73.9},
    }
    scale = {
        "config": {"sites": 50},
        "peak_pss_mib": 1653.2,
        "rounds": [{"round": 0, "seconds": 44.6}, {"round": 1, "seconds": 11.9}],
    }
    rows = headline_rows(
        {"benchmarks": {"compress_acceptance": compress, "federation_scale": scale}}
    )
    text = "\n".join(" | ".join(r) for r in rows)
    assert "1/20.2; 97.5%; -1.2 points" in text
    assert "74.5% vs 73.9%" in text
    compress["referable_sensitivity_difference_interval_points"] = [-2.44, 0.1]
    rows = headline_rows({"benchmarks": {"compress_acceptance": compress}})
    assert "-1.2 points [-2.4, +0.1]" in " | ".join(rows[0])
    assert "50 simulated sites" in text and "12 s per round; peak 1.61 GiB PSS" in text
    assert "(no headline)" not in text


def test_a_timm_benchmark_without_the_timm_venv_is_reported_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make bench`` runs in the main venv: clinical_models needs the timm venv's Python, and
    without one it is skipped with what to do, not failed; with one it runs with it."""
    monkeypatch.setenv("FOVEA_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "ROOT", tmp_path)  # no .venv-timm here
    monkeypatch.delenv("FOVEA_TIMM_PYTHON", raising=False)
    assert run.python_for("benchmarks.clinical_models") is None
    assert run.main(["--quick", "--only", "clinical_models"]) == 0
    latest = json.loads((tmp_path / "latest.json").read_text())
    skipped = latest["benchmarks"]["clinical_models_quick"]["skipped"]
    assert "make test-timm builds it" in skipped and not latest["failed"]
    assert skipped in (tmp_path / "latest.md").read_text()
    venv_python = tmp_path / ".venv-timm/bin/python"
    venv_python.parent.mkdir(parents=True)
    venv_python.touch()
    assert run.python_for("benchmarks.clinical_models") == str(venv_python)
    assert run.python_for("benchmarks.export_acceptance") == sys.executable
    monkeypatch.setenv("FOVEA_TIMM_PYTHON", "/opt/timm/bin/python")
    monkeypatch.setattr(Path, "is_file", lambda p: str(p) == "/opt/timm/bin/python")
    assert run.python_for("benchmarks.clinical_models") == "/opt/timm/bin/python"


def test_clinical_result_has_a_headline() -> None:
    result = {
        "scale": {"batch": 32, "student_size": 384, "teacher_size": 448},
        "acceptance": {
            "throughput_ratio": 26.3,
            "latency_ratio": 12.0,
            "student_best_precision": "fp32",
            "target_throughput_ratio": 25.0,
            "passed": True,
            "agent_chose": "fp32",
            "machine_oversubscribed": True,
        },
    }
    (row,) = headline_rows({"benchmarks": {"clinical_models": result}})
    assert "26.3x throughput at batch 32 (fp32; 25x met)" in row[1]
    assert "agent chose fp32; cores busy: unreliable" in row[1] and "(384 px, ORT)" in row[0]
