"""Scoring ONNX models: runs sized by pixels, so clinical-size images never go in one huge run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from models import PreprocessSpec
from models.datasets.arrays import FundusArrays
from server.export.scoring import predict_onnx, run_outputs, scoring_batch


class _Recording:
    """A stand-in session: the grade logits are each image's mean, and every run's size is kept."""

    def __init__(self) -> None:
        self.runs: list[int] = []

    def get_outputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="grade_logits"), SimpleNamespace(name="gradable_logit")]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feed["images"]
        assert x.dtype == np.float32
        self.runs.append(len(x))
        mean = x.reshape(len(x), -1).mean(1, keepdims=True)
        return [np.repeat(mean, 5, axis=1), mean]


def test_scoring_runs_shrink_with_image_size() -> None:
    assert scoring_batch(64) == 128 and scoring_batch(128) == 128
    assert scoring_batch(384) == 14 and scoring_batch(4096) == 1


def test_predictions_at_clinical_size_come_in_small_runs_and_match() -> None:
    size, n = 384, 30
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    arrays = FundusArrays(
        images, np.arange(n) % 5, np.ones(n, bool), np.zeros(n, "<U1"), np.arange(n)
    )
    spec = PreprocessSpec(size=size)
    sess = _Recording()
    p = predict_onnx(sess, arrays, spec, 0.5)  # type: ignore[arg-type]
    assert sess.runs == [14, 14, 2]
    whole = run_outputs(_Recording(), spec.normalise(images), batch_size=n)  # type: ignore[arg-type]
    np.testing.assert_allclose(p.grade_logits, whole["grade_logits"], rtol=1e-6)
    assert p.grade.tolist() == arrays.grade.tolist()
