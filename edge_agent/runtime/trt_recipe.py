"""The engine recipe (``recipe.json``, the manifest's ``engine_recipe``) the export writes and the
device replays: build settings per precision and TensorRT generation, as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edge_agent.runtime.trt_build import TIMING_CACHE, BuildSpec


class EngineStep(BaseModel):
    """How to build one precision's engine on one TensorRT generation (recipe.json)."""

    model_config = ConfigDict(extra="forbid")

    precision: Literal["fp32", "fp16", "int8"]
    trt: Literal["8.5", "10+"]
    onnx: str
    flags: list[str]
    calibration_cache: str | None = None
    verified: bool
    trtexec: str


class EngineRecipe(BaseModel):
    """The bundle's engine recipe: input, image size, batch profile, workspace, steps."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    input: str
    image_size: int
    channels: Literal[1, 3] = 3
    """Input channels (the task's ``input.channels``; the device sets it from the task)."""
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_mb: int
    dla_core: int | None
    timing_cache: str = TIMING_CACHE
    steps: list[EngineStep]

    def step(self, precision: str, generation: str) -> EngineStep | None:
        """The step for ``precision`` on TensorRT ``generation`` ("8.5" or "10+"), if any."""
        return next(
            (s for s in self.steps if s.precision == precision and s.trt == generation), None
        )

    def build_spec(self, step: EngineStep, base_dir: Path, timing_cache: Path | None) -> BuildSpec:
        """What the builder needs for ``step``, its files found under ``base_dir``."""
        calibration = step.calibration_cache
        return BuildSpec(
            onnx=base_dir / step.onnx,
            generation=step.trt,
            input_name=self.input,
            input_shape=(self.channels, self.image_size, self.image_size),
            batches=(self.min_batch, self.opt_batch, self.max_batch),
            workspace_mb=self.workspace_mb,
            precision=step.precision,
            flags=tuple(step.flags),
            calibration_cache=base_dir / calibration if calibration else None,
            timing_cache=timing_cache,
            dla_core=self.dla_core,
        )
