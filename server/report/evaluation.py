"""Running the exported student (ONNX Runtime) on a sample of each site's data for the report,
in the export's task (``export.json`` ``task``; DR grading for exports made before task specs):
its class output, its classes in the confusion matrix, its referral rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import DR_GRADING, PreprocessSpec, TaskSpec, parse_task

__all__ = ["SiteResult", "evaluate_sites", "export_task", "pooled", "quadratic_kappa"]


@dataclass(frozen=True)
class SiteResult:
    """One model file on one site's sample: the class confusion matrix and screening metrics."""

    site: str
    matrix: np.ndarray
    """Rows: true class, columns: predicted class (gradable, labelled images only)."""
    referable_true: int
    referable_found: int
    healthy_true: int
    healthy_cleared: int
    task: TaskSpec = DR_GRADING

    @property
    def n(self) -> int:
        """Gradable images in the sample."""
        return int(self.matrix.sum())

    @property
    def accuracy(self) -> float:
        """Share of images whose class was predicted exactly."""
        return float(np.trace(self.matrix) / self.n) if self.n else float("nan")

    @property
    def sensitivity(self) -> float:
        """Referable cases referred, of all referable cases."""
        return self.referable_found / self.referable_true if self.referable_true else float("nan")

    @property
    def specificity(self) -> float:
        """Non-referable cases not referred, of all non-referable cases."""
        return self.healthy_cleared / self.healthy_true if self.healthy_true else float("nan")

    @property
    def recall(self) -> dict[str, float]:
        """Each class's recall: images of that class predicted as it, of all images of it
        (NaN for a class with none)."""
        truth = self.matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(truth > 0, np.diag(self.matrix) / np.maximum(truth, 1), np.nan)
        return {c: float(v) for c, v in zip(self.task.classes, share, strict=True)}

    @property
    def kappa(self) -> float:
        """Quadratic-weighted kappa of the grades (``grading`` tasks; NaN for unordered
        classes)."""
        return quadratic_kappa(self.matrix) if self.task.kind == "grading" else float("nan")


def quadratic_kappa(matrix: np.ndarray) -> float:
    """Quadratic-weighted Cohen's kappa from a confusion matrix (rows true, columns predicted)."""
    m = np.asarray(matrix, dtype=np.float64)
    total = m.sum()
    if total == 0:
        return float("nan")
    k = m.shape[0]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    weights = (i - j) ** 2 / (k - 1) ** 2
    expected = np.outer(m.sum(1), m.sum(0)) / total
    denominator = (weights * expected).sum()
    return float(1.0 - (weights * m).sum() / denominator) if denominator else float("nan")


def _sample(path: Path, per_site: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as arrays:
        images, grades = arrays["images"], arrays["grade"]
        gradable = arrays["gradable"] if "gradable" in arrays else np.ones(len(grades), bool)
    keep = np.flatnonzero(gradable & (grades >= 0))
    rng = np.random.default_rng(seed)
    if len(keep) > per_site:
        keep = np.sort(rng.choice(keep, per_site, replace=False))
    return images[keep], grades[keep].astype(np.int64)


def _site_result(
    task: TaskSpec, site: str, logits: np.ndarray, labels: np.ndarray, threshold: float
) -> SiteResult:
    k = task.num_classes
    matrix = np.zeros((k, k), np.int64)
    if len(labels):
        np.add.at(matrix, (labels, task.probabilities(logits).argmax(1)), 1)
    referred = task.referral_score(logits) >= threshold if len(labels) else np.zeros(0, bool)
    truth = task.is_referable(labels)
    return SiteResult(
        site,
        matrix,
        referable_true=int(truth.sum()),
        referable_found=int((referred & truth).sum()),
        healthy_true=int((~truth).sum()),
        healthy_cleared=int((~referred & ~truth).sum()),
        task=task,
    )


def export_task(export_report: dict[str, Any]) -> TaskSpec:
    """The task an export answers (DR grading for exports made before task specs); a
    ``multilabel`` task is refused, since the report's matrices need one class per image."""
    raw = export_report.get("task")
    task = DR_GRADING if raw is None else parse_task(raw, "export.json: task")
    if task.kind == "multilabel":
        raise ValueError(
            f"export.json: task {task.name} is multilabel; the per-site evaluation needs one "
            "class per image"
        )
    return task


def evaluate_sites(
    export_dir: Path,
    export_report: dict[str, Any],
    site_files: list[Path],
    *,
    per_site: int = 300,
    seed: int = 0,
) -> dict[str, dict[str, SiteResult]]:
    """precision -> site -> result, for every ONNX file ``export.json`` lists that exists.

    Images are preprocessed with the export's own spec; referral uses its operating point and
    its task's rule. Labels outside the task's classes raise :class:`~models.TaskSpecError`
    naming them.
    """
    import onnxruntime as ort

    spec = PreprocessSpec.model_validate(export_report["preprocess"])
    task = export_task(export_report)
    threshold = float(export_report.get("operating_point", {}).get("referral_threshold", 0.5))
    samples = {path.stem: _sample(path, per_site, seed) for path in site_files}
    for _, labels in samples.values():
        task.check_labels(labels)
    (width,) = task.output_shapes()[task.outputs.classes]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    results: dict[str, dict[str, SiteResult]] = {}
    for precision, entry in export_report.get("precisions", {}).items():
        model = export_dir / str(entry.get("file", ""))
        if not model.is_file():
            continue
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        per_site_results = {}
        for site, (images, grades) in samples.items():
            chunks = [
                session.run([task.outputs.classes], {name: spec(images[i : i + 64])})[0]
                for i in range(0, len(images), 64)
            ]
            logits = np.concatenate(chunks) if chunks else np.zeros((0, width))
            per_site_results[site] = _site_result(task, site, logits, grades, threshold)
        results[precision] = per_site_results
    return results


def pooled(results: dict[str, SiteResult]) -> SiteResult:
    """All sites of one precision added together."""
    parts = list(results.values())
    task = parts[0].task if parts else DR_GRADING
    k = task.num_classes
    return SiteResult(
        "all sites",
        sum((r.matrix for r in parts), np.zeros((k, k), np.int64)),
        referable_true=sum(r.referable_true for r in parts),
        referable_found=sum(r.referable_found for r in parts),
        healthy_true=sum(r.healthy_true for r in parts),
        healthy_cleared=sum(r.healthy_cleared for r in parts),
        task=task,
    )
