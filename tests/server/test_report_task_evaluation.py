"""The report's per-site evaluation in the export's task: a grey binary glaucoma export answers
its own output, fills a 2 x 2 confusion matrix, refers by the task's rule, has no kappa, and
labels outside the task are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import InputSpec, PreprocessSpec, TaskSpecError, load_task
from models.nets import build_model
from models.synth import SITES, generate
from server.export import export_onnx
from server.report.evaluation import evaluate_sites, pooled
from server.report.figures import confusion_png

SIZE = 32
REPO = Path(__file__).resolve().parents[2]
GLAUCOMA = load_task(REPO / "configs" / "tasks" / "glaucoma-referral.yaml").model_copy(
    update={"input": InputSpec(channels=1, size=SIZE)}
)
SPEC = PreprocessSpec(size=SIZE, channel_order="L", mean=(0.3,), std=(0.2,))


def _site(path: Path, seed: int) -> Path:
    """A synthetic RGB site labelled for glaucoma (referable DR stands in for it)."""
    data = generate(SITES["site-b"], 40, size=SIZE, seed=seed)
    labels = np.where(data.grade >= 0, (data.grade >= 2).astype(np.int64), -1)
    np.savez(path, images=data.images, grade=labels, gradable=data.gradable)
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, torch.nn.Module]:
    """A tiny glaucoma student as ONNX, and the export.json the report reads."""
    out = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model("resnet-student", {"width": 4}).for_task_(GLAUCOMA).eval()
    export_onnx(model, SIZE, out / "model.fp32.onnx")
    report = {
        "preprocess": SPEC.model_dump(mode="json"),
        "task": GLAUCOMA.model_dump(mode="json"),
        "operating_point": {"referral_threshold": 0.5},
        "precisions": {"fp32": {"file": "model.fp32.onnx"}},
    }
    return out, report, model


def test_sites_are_scored_in_the_exports_task(
    tmp_path: Path, export: tuple[Path, dict, torch.nn.Module]
) -> None:
    out, report, model = export
    site = _site(tmp_path / "site-b.npz", seed=1)
    results = evaluate_sites(out, report, [site], per_site=100)
    r = results["fp32"]["site-b"]
    assert r.task == GLAUCOMA and r.matrix.shape == (2, 2)

    with np.load(site) as d:
        keep = d["gradable"] & (d["grade"] >= 0)
        images, labels = d["images"][keep], d["grade"][keep]
    with torch.no_grad():
        logits = model(torch.from_numpy(SPEC(images)))[GLAUCOMA.outputs.classes].numpy()
    referred = GLAUCOMA.referral_score(logits) >= 0.5
    predicted = (logits[:, 0] > 0).astype(np.int64)
    assert r.n == len(labels)
    assert np.trace(r.matrix) == int((predicted == labels).sum())
    assert r.referable_true == int(labels.sum())
    assert r.referable_found == int((referred & (labels == 1)).sum())
    assert r.healthy_cleared == int((~referred & (labels == 0)).sum())
    assert np.isnan(r.kappa)  # no order among the classes of a binary task
    assert pooled(results["fp32"]).matrix.shape == (2, 2)
    assert confusion_png(results["fp32"], None).startswith("data:image/png;base64,")


def test_labels_outside_the_exports_task_are_refused(
    tmp_path: Path, export: tuple[Path, dict, torch.nn.Module]
) -> None:
    out, report, _ = export
    site = _site(tmp_path / "site-c.npz", seed=2)
    with np.load(site) as d:
        arrays = dict(d)
    arrays["grade"][np.flatnonzero(arrays["gradable"])[0]] = 3  # a DR grade
    np.savez(site, **arrays)
    with pytest.raises(TaskSpecError, match=r"glaucoma-referral: labels \[3\]"):
        evaluate_sites(out, report, [site], per_site=100)
