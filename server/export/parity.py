"""Golden samples: fixed inputs with PyTorch's outputs, and ONNX Runtime checked against them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from server.export.onnx_export import INPUT_NAME
from server.export.scoring import run_outputs

GOLDEN_FILE = "golden.npz"


@torch.no_grad()
def write_golden(model: nn.Module, inputs: np.ndarray, path: Path) -> Path:
    """Save ``inputs`` (normalised N x C x H x W) and the PyTorch model's outputs on them,
    compressed: at 384 px 16 float32 inputs are 28 MB raw (more than a MobileNetV3's weights),
    and their black fundus borders compress about 6x."""
    out = model.eval()(torch.from_numpy(inputs))
    arrays: dict[str, np.ndarray] = {"schema_version": np.array(1), INPUT_NAME: inputs}
    arrays.update({name: value.float().numpy() for name, value in out.items()})
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


@dataclass(frozen=True)
class Parity:
    """Largest absolute difference from the golden outputs, and where it was."""

    max_abs_error: float
    worst_output: str
    tolerance: float

    @property
    def passed(self) -> bool:
        """Whether the error is within the tolerance."""
        return self.max_abs_error <= self.tolerance

    def describe(self) -> str:
        """One line for errors and tables."""
        verdict = "within" if self.passed else "exceeds"
        return (
            f"max |error| {self.max_abs_error:.3g} on {self.worst_output} "
            f"{verdict} tolerance {self.tolerance:g}"
        )


def check_parity(sess: ort.InferenceSession, golden: Path, tolerance: float) -> Parity:
    """Compare the session's outputs on ``golden``'s inputs with the expected outputs."""
    with np.load(golden) as g:
        got = run_outputs(sess, g[INPUT_NAME])
        errors = {name: float(np.abs(value - g[name]).max()) for name, value in got.items()}
    worst = max(errors, key=lambda k: errors[k])
    return Parity(errors[worst], worst, tolerance)
