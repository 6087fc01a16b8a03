import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.nets import build_model
from server.distill import run
from server.distill.config import MonitorConfig
from server.distill.monitors import RetentionGuard, linear_cka


def test_cka_is_one_for_identical_and_invariant_to_scale() -> None:
    x = torch.randn(32, 10)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(32, 10)) < 0.9
    # wide features (as at 128 px) go through N x N Grams: equal to the feature-space formula
    a, b = torch.randn(16, 30000), torch.randn(16, 20000)
    ac, bc = (a - a.mean(0)).double(), (b - b.mean(0)).double()
    small = float(
        (ac[:, :50].T @ bc[:, :40]).norm() ** 2
        / ((ac[:, :50].T @ ac[:, :50]).norm() * (bc[:, :40].T @ bc[:, :40]).norm())
    )
    assert linear_cka(a[:, :50], b[:, :40]) == pytest.approx(small)
    assert 0 < linear_cka(a, b) < 1


def test_guard_waits_for_warmup_then_alerts_adjusts_and_follows_up() -> None:
    guard = RetentionGuard(MonitorConfig(warmup_epochs=1, max_adjustments=1))
    low = {"retention": 0.5}
    assert guard.check(1, low, base_alpha=0.5) == []  # warm-up
    events = guard.check(2, low, base_alpha=0.5)
    assert [e["event"] for e in events] == ["alert"]
    assert events[0]["changes"]["feature_scale"] == {"from": 1.0, "to": 1.5}
    assert guard.strength.lr_scale == pytest.approx(0.7)
    assert guard.strength.alpha_shift == pytest.approx(0.1)
    events = guard.check(3, {"retention": 0.6}, base_alpha=0.5)
    assert events[0]["event"] == "followup" and events[0]["change"] == pytest.approx(0.1)
    assert "still rising" in events[1]["action"]  # below threshold but climbing: left alone
    events = guard.check(4, {"retention": 0.59}, base_alpha=0.5)
    assert "max reached" in events[0]["action"]  # stalled again, but no adjustments left
    assert guard.strength.lr_scale == pytest.approx(0.7)
    assert guard.check(5, {"retention": 0.9}, base_alpha=0.5) == []


def test_forced_low_retention_alerts_and_changes_training(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path, distill_config: Any
) -> None:
    """An unreachable threshold forces the alert path inside a real distillation run."""
    cfg = distill_config(
        tiny_data,
        tiny_teacher,
        tmp_path,
        train={"epochs": 3, "batch_size": 32, "threads": 1},
        monitor={
            "retention_threshold": 0.999,
            "warmup_epochs": 1,
            "probe_size": 16,
            "min_gain": 1.0,
        },
    )
    run(cfg, log=lambda s: None)
    records = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["record"] == "eval"]
    alerts = [r for r in records if r.get("event") == "alert"]
    assert [a["epoch"] for a in alerts] == [2, 3]
    assert all({"retention", "cka", "gradient_consistency"} <= set(e) for e in evals)
    assert evals[2]["feature_weight"] == pytest.approx(1.5)  # after the first adjustment
    assert evals[2]["alpha"] == pytest.approx(0.6)
    assert evals[2]["strength"]["lr_scale"] == pytest.approx(0.7)
    assert any(r.get("event") == "followup" for r in records)
    assert (tmp_path / "plots" / "monitors.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["training"]["alerts"] == 2 and metrics["generation"] == 1


def test_probe_batch_gradients_leave_models_unchanged() -> None:
    from server.distill.monitors import Probe, measure
    from server.distill.projectors import FeatureAligner

    s, t = build_model("resnet-student"), build_model("resnet-teacher-small")
    aligner = FeatureAligner({"stage4": "stage4"}, s.tap_channels(64), t.tap_channels(64))
    s.train()
    before = [p.clone() for p in s.parameters()]
    probe = Probe(torch.randn(8, 3, 64, 64), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))
    values = measure(s, t.eval(), aligner, probe)
    assert -1 <= values["gradient_consistency"] <= 1 and 0 <= values["cka"] <= 1
    assert s.training and all(
        torch.equal(a, b) for a, b in zip(before, s.parameters(), strict=True)
    )
