"""The benchmark scripts keep working: smoke-sized runs that check what they write."""

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def test_synth_speed_writes_a_table(tmp_path: Path, bench: Callable[..., None]) -> None:
    bench(["benchmarks.synth_speed", "--n", "200", "--size", "64"], tmp_path)
    result = json.loads((tmp_path / "synth_speed.json").read_text())
    assert set(result["seconds"]) == {"site-a", "site-c", "site-d"}
    assert "images/s" in (tmp_path / "synth_speed.md").read_text()


@pytest.mark.slow
def test_distill_acceptance_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    bench(["benchmarks.distill_acceptance", "--quick", "--workdir", str(tmp_path / "w")], tmp_path)
    result = json.loads((tmp_path / "distill_acceptance_quick.json").read_text())
    assert result["student_parameters"] < result["teacher_parameters"] / 10
    assert set(result["distilled_minus_scratch"]["over_seeds"]) == {"accuracy", "kappa"}
    assert 0 < result["monitors"]["share_of_epoch"] < 1
    table = (tmp_path / "distill_acceptance_quick.md").read_text()
    assert "distilled - scratch accuracy" in table


@pytest.mark.slow
def test_export_acceptance_quick(
    tiny_teacher: Path, tmp_path: Path, bench: Callable[..., None]
) -> None:
    """The export benchmark on a tiny run directory (a teacher run stands in for a student)."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_teacher.parent, run_dir)
    for suffix in (".json", ".safetensors"):
        shutil.copy(run_dir / f"teacher{suffix}", run_dir / f"student{suffix}")
    bench(["benchmarks.export_acceptance", "--quick", "--run", str(run_dir)], tmp_path)
    written = list(tmp_path.glob("export_acceptance*.json"))
    assert written, "no result file"
    result = json.loads(written[0].read_text())
    assert "int8" in json.dumps(result)


@pytest.mark.slow
def test_agent_load_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    """The agent benchmark end to end on untrained models (no demo workdir): fields, no failures."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the agent benchmark pins the load generator and the agent to two cores")
    bench(["benchmarks.agent_load", "--quick", "--workdir", str(tmp_path / "no-demo")], tmp_path)
    result = json.loads((tmp_path / "agent_load_quick.json").read_text())
    assert result["failed_requests"] == 0
    assert result["generator_max_req_s"] > 0
    for name in ("student", "teacher"):
        model = result["models"][name]
        assert "untrained" in result["sources"][name]
        assert model["raw_best"]["img_s"] > 0 and model["ratio_binary_vs_raw"] > 0
        assert model["cold_start_s"] > 0 and model["rss_mib_ready"] > 0
        assert {"binary", "json", "jpeg"} <= set(model["load"])
        for phase in (*model["load"].values(), model["half_load"]):
            assert phase["failed"] == 0 and phase["ok"] > 0
            assert 0 < phase["p50_ms"] <= phase["p99_ms"]
    assert "agent / raw" in (tmp_path / "agent_load_quick.md").read_text()


def test_federation_acceptance_quick(tmp_path: Path, bench: Callable[..., None]) -> None:
    """The federation benchmark smoke-sized: every codec, both strategies, the acceptance check."""
    bench(["benchmarks.federation_acceptance", "--quick", "--no-cache", "--threads", "1"], tmp_path)
    result = json.loads((tmp_path / "federation_acceptance_quick.json").read_text())
    codecs = result["codecs"]
    assert set(codecs) == {"none", "fp16", "int8-delta"}
    sent = [codecs[c]["bytes_per_client_round"] for c in ("none", "fp16", "int8-delta")]
    assert sent[0] > sent[1] > sent[2] > 0
    adaptation = result["adaptation"]
    assert isinstance(adaptation["accepted"], bool)
    assert {"accuracy", "sensitivity", "n"} <= set(adaptation["adapted"])
    rounds = result["rounds_to_target"]
    assert len(rounds["fedavg_curve"]) == len(rounds["fedprox_curve"]) == 3  # round 0 + 2
    assert "rounds to mean accuracy" in (tmp_path / "federation_acceptance_quick.md").read_text()
