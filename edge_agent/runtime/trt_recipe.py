"""The engine recipe (``recipe.json``, the manifest's ``engine_recipe``) the export writes and the
device replays: build settings per precision and TensorRT generation, as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.runtime.trt_build import TIMING_CACHE, BuildSpec

DEFAULT_DLA_BATCHES = (1, 8)
"""DLA batch sizes when a recipe with a ``dla_core`` names none: DLA needs static shapes, so
each batch size is its own engine."""


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
    dla_batches: list[int] | None = Field(None, min_length=1)
    """Batch sizes of the DLA engines (one static engine each; default
    :data:`DEFAULT_DLA_BATCHES`); ignored without ``dla_core``."""
    timing_cache: str = TIMING_CACHE
    steps: list[EngineStep]

    def step(self, precision: str, generation: str) -> EngineStep | None:
        """The step for ``precision`` on TensorRT ``generation`` ("8.5" or "10+"), if any."""
        return next(
            (s for s in self.steps if s.precision == precision and s.trt == generation), None
        )

    def dla_batch_sizes(self) -> list[int]:
        """The DLA engines' batch sizes (empty without ``dla_core``)."""
        if self.dla_core is None:
            return []
        return sorted(set(self.dla_batches or DEFAULT_DLA_BATCHES))

    def build_specs(
        self, step: EngineStep, base_dir: Path, timing_cache: Path | None
    ) -> list[BuildSpec]:
        """One spec per engine ``step`` needs, its files found under ``base_dir``.

        DLA needs min = opt = max, so a DLA step gives one static spec per DLA batch size; fp32
        cannot run on DLA and, like every step without ``dla_core``, gives the one dynamic
        (min, opt, max) GPU spec.
        """
        calibration = step.calibration_cache

        def spec(batches: tuple[int, int, int], dla_core: int | None) -> BuildSpec:
            return BuildSpec(
                onnx=base_dir / step.onnx,
                generation=step.trt,
                input_name=self.input,
                input_shape=(self.channels, self.image_size, self.image_size),
                batches=batches,
                workspace_mb=self.workspace_mb,
                precision=step.precision,
                flags=tuple(step.flags),
                calibration_cache=base_dir / calibration if calibration else None,
                timing_cache=timing_cache,
                dla_core=dla_core,
            )

        if self.dla_core is None or step.precision == "fp32":
            return [spec((self.min_batch, self.opt_batch, self.max_batch), None)]
        return [spec((b, b, b), self.dla_core) for b in self.dla_batch_sizes()]

    def build_spec(self, step: EngineStep, base_dir: Path, timing_cache: Path | None) -> BuildSpec:
        """The spec of ``step``'s engine when it has one; a DLA step's smallest-batch engine.

        Prefer :meth:`build_specs`: a DLA step builds one engine per batch size.
        """
        return self.build_specs(step, base_dir, timing_cache)[0]
