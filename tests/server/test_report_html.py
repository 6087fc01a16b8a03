"""The HTML report: rendered from a small demo-like workdir and checked in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import GRADE_NAMES
from server.report import build_report
from server.report.calibration import calibration_section
from server.report.evaluation import quadratic_kappa
from server.report.page import SECTION_TITLES

CHROMIUM = Path("/usr/bin/chromium")


def _estimate(value: float) -> dict[str, float]:
    return {"value": value, "low": value - 0.02, "high": value + 0.02}


def _calibration(temperature: float) -> dict[str, object]:
    from models import reliability

    rng = np.random.default_rng(0)
    p = rng.random(400)
    seen = rng.random(400) < p
    raw = reliability(np.clip(p * 1.3, 0, 1), seen).as_dict()
    return {"temperature": temperature, "before": raw, "after": reliability(p, seen).as_dict()}


def _metrics() -> dict[str, object]:
    def role(acc: float, size: int) -> dict[str, object]:
        split = {
            "accuracy": _estimate(acc),
            "referable_sensitivity": _estimate(0.85),
            "referable_specificity": _estimate(0.97),
            "kappa": _estimate(0.8),
            **{f"recall[{g}]": _estimate(0.5) for g in GRADE_NAMES},
        }
        return {
            "parameters": 1000,
            "val": split,
            "test": split,
            "file_bytes": size,
            "operating_point": {
                "referral_threshold": 0.2,
                "temperature": 1.4,
                "warning": "target sensitivity 0.95 reached only at specificity 0.700 < floor "
                "0.80 (validation); the threshold keeps the sensitivity target",
            },
            "calibration": {"val": _calibration(1.4), "test": _calibration(1.4)},
        }

    return {
        "schema_version": 1,
        "name": "student",
        "generation": 1,
        "student": role(0.72, 320_000),
        "teacher": role(0.75, 6_300_000),
    }


def _monitor_lines() -> str:
    lines: list[dict[str, Any]] = []
    for epoch in (1, 2, 3, 4):
        lines.append(
            {
                "record": "eval",
                "epoch": epoch,
                "val": {"accuracy": 0.5 + 0.05 * epoch, "kappa": 0.6, "referable_sensitivity": 0.7},
                "retention": 0.8 + 0.03 * epoch,
                "cka": 0.9,
                "gradient_consistency": 0.2,
            }
        )
    lines.insert(
        2,
        {
            "record": "event",
            "event": "alert",
            "epoch": 2,
            "retention": 0.84,
            "threshold": 0.85,
            "action": "strengthened distillation",
            "changes": {"feature_scale": {"from": 1.0, "to": 1.5}},
        },
    )
    return "\n".join(json.dumps(x) for x in lines) + "\n{cut short"


def _federation(run_dir: Path) -> None:
    from server.federation.registry import DecisionRecord, Participant, Registry, RoundRecord

    registry = Registry(run_dir / "registry.db")
    registry.set_meta("status", "finished")
    registry.set_meta("sites", {"7": "site-a", "8": "site-b"})
    for rnd in range(3):
        parts = [
            Participant(n, "evaluate", "accepted", "", {"eval-accuracy": 0.6 + 0.01 * rnd})
            for n in (7, 8)
        ]
        if rnd:
            parts += [
                Participant(7, "train", "accepted", "", {"train-loss": 0.5}),
                Participant(8, "train", "rejected", "non-finite weights"),
            ]
        record = RoundRecord(
            rnd,
            "done",
            0.0,
            1.0,
            2 * (rnd > 0),
            2 * (rnd > 0),
            rnd > 0,
            {"train-loss": 0.5},
            {"eval-accuracy": 0.6 + 0.01 * rnd},
            {"accuracy": 50.0 + rnd},
        )
        registry.record_round(record, parts)
    registry.record_decision(
        DecisionRecord(
            2,
            True,
            "candidate is at least as good",
            {"accuracy": 52.0},
            {"accuracy": 50.0},
            {},
            "bundles/student-v2.tar",
            2,
        )
    )
    (run_dir / "state.json").write_text(json.dumps({"schema_version": 1, "round": 2}))


def _fleet(workdir: Path) -> None:
    from deploy.fleet import Device, Inventory, TransportSpec

    inventory = Inventory(workdir / "fleet.db")
    for i, site in enumerate(("site-a", "site-b"), 1):
        root = workdir / "devices" / f"clinic-{i}"
        inventory.add(
            Device(
                host=f"clinic-{i}",
                url=f"http://127.0.0.1:{9000 + i}",
                token="t",
                site=site,
                transport=TransportSpec(kind="local", root=str(root)),
                model_name="student",
                model_version=1,
                precision="fp16",
                backend="onnxruntime",
                status="ready",
            )
        )


@pytest.fixture(scope="module")
def workdir(tiny_data: Path, tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-like workdir: real data, export and registry formats; small fake metrics files."""
    work = tmp_path_factory.mktemp("demo")
    shutil.copytree(tiny_data, work / "data")
    student = work / "student"
    shutil.copytree(tiny_export, student / "export")
    (student / "metrics.json").write_text(json.dumps(_metrics()))
    (student / "monitor.jsonl").write_text(_monitor_lines())
    (student / "config.yaml").write_text("data:\n  test_site: site-e\n")
    _federation(work / "federation" / "run-1")
    _fleet(work)
    return work


def _browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must check the report in a real browser")
        pytest.skip(f"{CHROMIUM} not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    return sync_api.sync_playwright()


def test_report_renders_every_section_in_chromium(workdir: Path, tmp_path: Path) -> None:
    out = build_report(workdir, tmp_path / "report.html", per_site=40)
    text = out.read_text()
    assert "http://" not in text.replace("http://127.0.0.1", "")  # nothing fetched from outside
    assert "not run yet" not in text
    with _browser() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(out.as_uri())
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        headings = page.locator("h2").all_inner_texts()
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        body = page.inner_text("body")
        browser.close()
    assert headings == list(SECTION_TITLES)
    # models, calibration, monitor, sites, rounds
    assert len(widths) == 5 and all(w > 0 for w in widths)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert "PROMOTED after round 2" in body
    assert "rejected (non-finite weights)" in body and "site-a" in body
    assert "strengthened distillation" in body
    assert "clinic-2" in body
    assert "chosen on the validation split only" in body and "ECE raw" in body
    assert "student, unseen site" in body and "recall per class" in body
    assert "moderate" in body  # each grade's recall, in the site tables too


def test_calibration_section_warns_below_the_floor(workdir: Path, tmp_path: Path) -> None:
    from server.report.sources import Workdir

    work = tmp_path / "w"
    shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("data", "export"))
    body = calibration_section(Workdir(work)).body
    # no export: the student's own point from metrics.json, with its warning
    assert "Operating point (the student)" in body
    assert "Warning: target sensitivity 0.95 reached only at specificity 0.700" in body
    assert body.count("<tr>") == 1 + 4 + 1 + 4  # ECE: 2 models x 2 splits; recall likewise
    assert "no DR 50.0%" in body
    # the export's point, when there is one, comes first
    text = calibration_section(Workdir(workdir)).body
    assert "Operating point (the exported student)" in text


def test_report_says_not_run_yet_for_each_missing_input(tmp_path: Path) -> None:
    out = build_report(tmp_path / "empty", tmp_path / "report.html")
    text = out.read_text()
    assert text.count("not run yet") == len(SECTION_TITLES)
    assert "<img" not in text


def test_an_unreadable_input_spoils_only_its_section(workdir: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("data"))
    (work / "student" / "metrics.json").write_text("{not json")
    text = build_report(work, per_site=10).read_text()
    assert "could not read its input" in text and "metrics.json" in text
    assert "PROMOTED" in text and "not run yet" in text  # no data: the sites section only


def test_quadratic_kappa() -> None:
    assert quadratic_kappa(np.eye(5) * 10) == pytest.approx(1.0)
    assert quadratic_kappa(np.zeros((5, 5))) != quadratic_kappa(np.zeros((5, 5)))  # nan
    flipped = np.fliplr(np.eye(5)) * 10
    assert quadratic_kappa(flipped) < 0
