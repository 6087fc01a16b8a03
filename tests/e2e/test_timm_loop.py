"""Acceptance (issue 15): the whole loop with no Fovea model family. A folder of JPEGs with an
EyePACS-style CSV, prepared at 128 px; a timm teacher (random initialisation) distilled into a
smaller timm student; channel pruning and QAT; export; a signed bundle that names timm; agents
screening JPEGs over HTTP; clinicians' reviews; one federated round whose ClientApps rebuild the
timm student; a promotion decision.

timm imports only beside PyPI's own torch build, so ``make test-timm`` runs this in
``.venv-timm`` (and fails there if timm is missing); the main venv skips it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from own_loop import (
    QUICK_EXPORT,
    eyepacs_folder,
    federated_round,
    fovea,
    jpeg,
    screen_and_review,
    write_yaml,
)

SIZE = 128
TEACHER = "timm:mobilenetv3_small_100"
STUDENT = "timm:mobilenetv3_small_050"


def _need_timm() -> None:
    try:
        importlib.import_module("timm")
    except Exception as e:  # beside the CPU torch wheel timm fails with a RuntimeError
        if os.environ.get("FOVEA_REQUIRE_TIMM") == "1":
            pytest.fail(f"timm cannot be imported in the venv of make test-timm: {e}")
        pytest.skip("timm cannot be imported beside this torch; make test-timm runs this test")


@pytest.mark.slow
def test_a_timm_teacher_and_student_run_the_whole_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_timm()
    from deploy.flash import bundle_manifest
    from models import GRADE_NAMES
    from models.synth import SITES, generate

    work = tmp_path
    monkeypatch.chdir(work)
    for folder, profile, n, seed in (("eyepacs", "site-a", 192, 0), ("unseen", "site-e", 64, 1)):
        raw = eyepacs_folder(work / "raw" / folder, profile, n, SIZE, seed)
        out = fovea("data", "prepare", raw, "--size", str(SIZE), "--site", folder,
                    "--out", "data", cwd=work)  # fmt: skip
        assert "(eyepacs, task dr-grading)" in out
    data = {"dir": "data", "train_sites": ["eyepacs"], "test_site": "unseen"}
    quick = {"epochs": 1, "batch_size": 32, "threads": 2}

    fovea("teacher", "train", "--data", "data", "--out", "runs/teacher", "--model", TEACHER,
          "--train-sites", "eyepacs", "--test-site", "unseen", "--epochs", "1",
          cwd=work)  # fmt: skip
    write_yaml(work / "distill.yaml", {
        "teacher": "runs/teacher/teacher.json", "student": {"name": STUDENT}, "data": data,
        "train": quick, "search": {"enabled": False}, "bootstrap": 20, "out": "runs/distill",
    })  # fmt: skip
    out = fovea("distill", "distill.yaml", cwd=work)
    assert "retention" in (work / "runs" / "distill" / "monitor.jsonl").read_text(), out
    write_yaml(work / "compress.yaml", {
        "teacher": "runs/teacher/teacher.json", "start": "runs/distill/student.json",
        "distill": {"data": data, "train": quick, "bootstrap": 20},
        "steps": [{"kind": "prune_channels", "ratio": 0.3, "epochs": 1, "latency_runs": 0},
                  {"kind": "qat", "epochs": 1}],
        "out": "runs/compress", "latency_runs": 0,
    })  # fmt: skip
    fovea("compress", "compress.yaml", cwd=work)
    distilled = json.loads((work / "runs" / "distill" / "student.json").read_text())
    compressed = json.loads((work / "runs" / "compress" / "student.json").read_text())
    assert compressed["resized"] and compressed["family"] == "timm"
    assert compressed["parameters"] < 0.8 * distilled["parameters"]  # torch-pruning's slicing
    write_yaml(work / "export.yaml", {**QUICK_EXPORT, "int8_source": "qat"})
    fovea("export", "runs/compress", "--config", "export.yaml", cwd=work)
    export = work / "runs" / "compress" / "export"

    fovea("keys", "generate", "publisher", "--dir", "keys", cwd=work)
    fovea("bundle", "build", export, "--version", "1", "--key", "keys/publisher.key",
          "--out", "timm-v1.tar", cwd=work)  # fmt: skip
    manifest = bundle_manifest(work / "timm-v1.tar")
    assert manifest.requires == ("timm",)
    assert manifest.task.name == "dr-grading"

    devices = {}
    for name, seed in (("clinic-1", 11), ("clinic-2", 12)):
        cases = generate(SITES["site-b"], 24, size=SIZE, seed=seed)
        photos = [
            (jpeg(cases.images[i]), GRADE_NAMES[cases.grade[i]])
            for i in np.flatnonzero(cases.grade >= 0)[:12]
        ]
        answers, metadata = screen_and_review(
            work / name, work / "timm-v1.tar", work / "keys" / "publisher.pub", photos
        )
        devices[name] = work / name
        assert [o["name"] for o in metadata["outputs"]] == ["grade_logits", "gradable_logit"]
        assert metadata["inputs"][0]["shape"] == [-1, 3, SIZE, SIZE]
        for answer in answers:
            (eye,) = answer["eyes"]
            assert list(eye["probabilities"]) == list(GRADE_NAMES)
            assert answer["model"]["version"] == 1

    decision = federated_round(
        work, devices, export, work / "timm-v1.tar", work / "keys" / "publisher.key"
    )
    assert decision["reason"] and "no round produced" not in decision["reason"], decision
    assert set(decision["candidate"]) >= {"accuracy", "referable_sensitivity"}
    if decision["promoted"]:
        promoted = bundle_manifest(Path(decision["bundle"]))
        assert promoted.requires == ("timm",) and promoted.version == 2
