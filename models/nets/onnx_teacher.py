"""An ONNX model as a teacher: ONNX Runtime behind the network interface, logits only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.nets.base import FundusNet
from models.sources import SourceError, extra_message
from models.task import DR_GRADING, TaskSpec


class OnnxTeacher(FundusNet):
    """Runs ``path`` with ONNX Runtime (CPU) and answers like a Fovea network.

    It has no weights in torch and no feature taps, so it can teach by its outputs only (logit
    distillation) and cannot be trained. The ONNX model takes images (N x C x H x W) and gives
    either the task's named outputs (as ``fovea export`` writes them; for DR grading
    ``grade_logits`` and ``gradable_logit``) or one output holding them side by side (for DR,
    N x 6: 5 grade logits, then the gradability logit).
    """

    family = "onnx"

    def __init__(self, path: str | Path) -> None:
        nn.Module.__init__(self)
        self.config = {"path": str(path)}
        self.embed_dim = 0
        self.task = DR_GRADING
        where = f"onnx:{path}"
        if not Path(path).is_file():
            raise SourceError(f"{where}: no such ONNX file")
        try:
            import onnxruntime as ort
        except Exception as e:
            raise SourceError(extra_message("onnx", f"{type(e).__name__}: {e}")) from None
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise SourceError(f"{where}: ONNX Runtime cannot load it: {e}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise SourceError(f"{where}: expected one image input, found {len(inputs)}")
        self._input_name = inputs[0].name
        self._outputs = self._output_layout()

    def for_task_(self, task: TaskSpec) -> OnnxTeacher:
        """Read the ONNX model's outputs as ``task``'s (it must give them). Returns ``self``."""
        self.task = task
        self._outputs = self._output_layout()
        return self

    def _output_layout(self) -> list[str]:
        outputs = [o.name for o in self._session.get_outputs()]
        wanted = list(self.task.output_shapes())
        if set(wanted) <= set(outputs):
            return wanted
        if len(outputs) == 1:
            return outputs
        raise SourceError(
            f"onnx:{self.config['path']}: outputs {outputs}; a teacher for task {self.task.name} "
            f"needs {' and '.join(wanted)}, or one N x {self.task.head_width} output"
        )

    @property
    def tap_names(self) -> tuple[str, ...]:
        """None: an ONNX teacher has no feature taps."""
        return ()

    def tap_channels(self, image_size: int) -> dict[str, tuple[int, int, int]]:
        """Empty: an ONNX teacher has no feature taps."""
        return {}

    def forward_taps(
        self, x: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The ONNX model's outputs for ``x`` (on ``x``'s device), named as the task's, and no
        taps."""
        feed = {self._input_name: x.detach().float().cpu().numpy()}
        got: list[Any] = self._session.run(self._outputs, feed)
        shapes = self.task.output_shapes()
        if len(got) == 1 and len(shapes) > 1:
            side_by_side = np.asarray(got[0])
            if side_by_side.ndim != 2 or side_by_side.shape[1] != self.task.head_width:
                raise ValueError(
                    f"onnx:{self.config['path']}: its output is {side_by_side.shape}, not N x "
                    f"{self.task.head_width}"
                )
            edges = np.cumsum([w for (w,) in shapes.values()])[:-1]
            got = np.split(side_by_side, edges, axis=1)
        return {
            name: torch.from_numpy(np.asarray(g)).reshape(len(x), width).to(x.device)
            for (name, (width,)), g in zip(shapes.items(), got, strict=True)
        }, {}
