"""A multilabel task from a CSV of findings: prepare, teacher, distillation with the T/alpha
search, QAT, export, a signed bundle and an agent screening over HTTP, with per-label AUCs in
the metrics and an N x L ONNX output; a bad finding names its row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from own_loop import QUICK_EXPORT, fovea, jpeg, prepare_and_teach, write_yaml

SIZE = 32
FINDINGS = ("bright disc", "dark bar", "grid")
SPEC = {
    "schema_version": 1,
    "name": "shape-findings",
    "kind": "multilabel",
    "classes": list(FINDINGS),
    "referral": {"labels": ["bright disc", "dark bar"], "target_sensitivity": 0.9},
    "patient_rule": "any_positive",
    "quality_head": False,
    "input": {"channels": 3, "size": SIZE, "preprocessing": "resize"},
    "outputs": {"classes": "finding_logits"},
}


def _photo(found: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy RGB square showing each finding present as a shape: a bright disc, a dark
    horizontal bar, a grid of lines."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = rng.normal(110, 15, (SIZE, SIZE, 3))
    if found[0]:
        cy, cx = rng.integers(8, SIZE - 8, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = (250, 230, 120)
    if found[1]:
        row = int(rng.integers(4, SIZE - 8))
        img[row : row + 4, 4:-4] = 10
    if found[2]:
        img[::6] += 70
        img[:, ::6] += 70
    return img.clip(0, 255).astype(np.uint8)


def _findings_csv(root: Path, n: int, seed: int) -> Path:
    """``n`` JPEGs in ``root/images`` and ``root/labels.csv`` naming each one's findings
    (``a;b``, ``none`` or empty), a few ``ungradable``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    lines = ["image,label,patient"]
    for i in range(n):
        found = rng.integers(0, 2, len(FINDINGS))
        name = f"img{i:04d}.jpg"
        (root / "images" / name).write_bytes(jpeg(_photo(found, rng)))
        cell = ";".join(f for f, on in zip(FINDINGS, found, strict=True) if on)
        cell = "ungradable" if i % 50 == 49 else cell or ("none" if i % 2 else "")
        lines.append(f"{name},{cell},p{seed}-{i // 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_a_multilabel_task_trains_distils_and_exports_from_a_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.datasets import FundusArrays
    from models.task import load_task

    work = tmp_path
    monkeypatch.chdir(work)
    write_yaml(work / "findings.yaml", SPEC)
    task = load_task(work / "findings.yaml")
    sites = {
        site: _findings_csv(work / "raw" / site, n, seed)
        for site, n, seed in (("north", 240, 0), ("south", 80, 1))
    }
    prepare_and_teach(work, "findings.yaml", sites, "resnet-teacher-small", 4)
    north = FundusArrays.load_sharded(work / "data" / "north")
    assert north.labels is not None and north.labels.shape == (240, 3)
    assert set(np.unique(north.grade)) == {-1, 0} and int((north.grade < 0).sum()) == 4
    meta = json.loads((work / "data" / "dataset.json").read_text())
    assert meta["task"]["kind"] == "multilabel"
    assert set(meta["prepared"]["north"]["counts"]) == {*FINDINGS, "ungradable"}

    data = {"dir": "data", "train_sites": ["north"], "test_site": "south"}
    write_yaml(work / "distill.yaml", {
        "teacher": "runs/teacher/teacher.json", "student": {"name": "resnet-student"},
        "data": data, "train": {"epochs": 4}, "bootstrap": 20, "out": "runs/distill",
        "search": {"enabled": True, "temperatures": [2.0, 4.0], "alphas": [0.5], "epochs": 1,
                   "metric": "mean_auc", "compare_without_teacher": False},
    })  # fmt: skip
    fovea("distill", "distill.yaml", cwd=work)
    metrics = json.loads((work / "runs" / "distill" / "metrics.json").read_text())
    flat = json.dumps(metrics)
    for name in ("mean_auc", "accuracy", *(f"auc[{f}]" for f in FINDINGS)):
        assert f'"{name}"' in flat, f"{name} missing from metrics.json"
    assert metrics["student"]["test"]["mean_auc"]["value"] >= 0.8  # the shapes are learnt

    write_yaml(work / "compress.yaml", {
        "teacher": "runs/teacher/teacher.json", "start": "runs/distill/student.json",
        "distill": {"data": data, "train": {"epochs": 1}, "bootstrap": 20},
        "steps": [{"kind": "qat", "epochs": 1}], "out": "runs/compress", "latency_runs": 0,
    })  # fmt: skip
    fovea("compress", "compress.yaml", cwd=work)
    write_yaml(work / "export.yaml", {**QUICK_EXPORT, "int8_source": "qat"})
    fovea("export", "runs/compress", "--config", "export.yaml", cwd=work)
    export = work / "runs" / "compress" / "export"
    import onnxruntime as ort

    for precision in ("fp32", "int8"):
        sess = ort.InferenceSession(str(export / f"model.{precision}.onnx"))
        (out,) = sess.get_outputs()
        x = np.zeros((5, 3, SIZE, SIZE), np.float32)
        assert out.name == "finding_logits"
        assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (5, 3)
    with np.load(export / "validation.npz") as v:
        assert v["labels"].ndim == 2 and v["labels"].shape[1] == 3
        task.check_labels(v["labels"])

    fovea("keys", "generate", "publisher", "--dir", "keys", cwd=work)
    fovea("bundle", "build", export, "--version", "1", "--key", "keys/publisher.key",
          "--out", "findings-v1.tar", cwd=work)  # fmt: skip
    answers = _screen(work, [_photo(np.array(f), np.random.default_rng(5)) for f in
                             ((1, 0, 0), (0, 1, 1), (0, 0, 0))])  # fmt: skip
    for answer in answers:
        assert answer["task"]["name"] == "shape-findings"
        (eye,) = answer["eyes"]
        assert set(eye["probabilities"]) == set(FINDINGS)
        assert set(eye["labels"]) <= set(FINDINGS)


def _screen(work: Path, photos: list[np.ndarray]) -> list[dict[str, object]]:
    """Install the bundle on a device root, serve it and screen each photo over HTTP."""
    import shutil

    from fastapi.testclient import TestClient

    from edge_agent.install import DeviceRoot, install
    from edge_agent.service import AgentConfig
    from edge_agent.service.server import load_agent

    device = DeviceRoot(work / "clinic").ensure()
    shutil.copy(work / "keys" / "publisher.pub", device.keys.trusted / "publisher.pub")
    install(device, work / "findings-v1.tar")
    agent = load_agent(work / "clinic", AgentConfig(max_batch=4, max_wait_ms=1.0, threads=1))
    tech = {"Authorization": f"Bearer {agent.store.add_user('tech-1', 'technician')}"}
    answers = []
    with TestClient(agent.app) as client:
        for i, photo in enumerate(photos):
            files = {"image": (f"photo{i}.jpg", jpeg(photo), "image/jpeg")}
            r = client.post("/v1/screen", files=files, headers=tech)
            assert r.status_code == 200, r.text
            answers.append(r.json())
    return answers


def test_a_bad_finding_names_its_row_and_class_folders_are_refused(tmp_path: Path) -> None:
    from models.datasets import DatasetLayoutError
    from models.task import parse_task
    from server.training.prepare import PrepareOptions, prepare_dataset

    task = parse_task(SPEC)
    raw = _findings_csv(tmp_path / "raw", 6, 0)
    with (raw / "labels.csv").open("a") as f:
        f.write("img0000.jpg,dark bar;cotton wool,p9\n")
    options = PrepareOptions(
        raw / "images", tmp_path / "data", SIZE, task=task, csv=raw / "labels.csv"
    )
    with pytest.raises(DatasetLayoutError, match=r"row 8, column 'label'.*'cotton wool'"):
        prepare_dataset(options)
    folders = PrepareOptions(raw, tmp_path / "data", SIZE, layout="folders", task=task)
    with pytest.raises(DatasetLayoutError, match=r"multilabel.*CSV"):
        prepare_dataset(folders)
