"""An ONNX model as a teacher: ONNX Runtime behind the network interface, logits only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.nets.base import FundusNet
from models.sources import SourceError, extra_message
from models.task import NUM_GRADES, OUTPUT_NAMES


class OnnxTeacher(FundusNet):
    """Runs ``path`` with ONNX Runtime (CPU) and answers like a Fovea network.

    It has no weights in torch and no feature taps, so it can teach by its outputs only (logit
    distillation) and cannot be trained. The ONNX model takes images (N x 3 x H x W) and gives
    either the two named outputs ``grade_logits`` and ``gradable_logit`` (as ``fovea export``
    writes them) or one N x 6 output (5 grade logits, then the gradability logit).
    """

    family = "onnx"

    def __init__(self, path: str | Path) -> None:
        nn.Module.__init__(self)
        self.config = {"path": str(path)}
        self.embed_dim = 0
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
        self._input = inputs[0].name
        self._outputs = self._output_layout(where)

    def _output_layout(self, where: str) -> list[str]:
        outputs = [o.name for o in self._session.get_outputs()]
        if set(OUTPUT_NAMES) <= set(outputs):
            return list(OUTPUT_NAMES)
        if len(outputs) == 1:
            return outputs
        raise SourceError(
            f"{where}: outputs {outputs}; a teacher needs {' and '.join(OUTPUT_NAMES)}, or one "
            f"N x {NUM_GRADES + 1} output"
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
        """The ONNX model's two outputs for ``x`` (on ``x``'s device) and no taps."""
        feed = {self._input: x.detach().float().cpu().numpy()}
        got: list[Any] = self._session.run(self._outputs, feed)
        if len(got) == 1:
            both = np.asarray(got[0])
            if both.ndim != 2 or both.shape[1] != NUM_GRADES + 1:
                raise ValueError(
                    f"onnx:{self.config['path']}: its output is {both.shape}, not N x "
                    f"{NUM_GRADES + 1}"
                )
            got = [both[:, :NUM_GRADES], both[:, NUM_GRADES:]]
        grade, gradable = (torch.from_numpy(np.asarray(g)).to(x.device) for g in got)
        return {"grade_logits": grade, "gradable_logit": gradable.reshape(-1, 1)}, {}
