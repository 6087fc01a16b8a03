"""TensorRT engines from a bundle's recipe (8.5: builder flags; 10 and 11: strongly typed), cached.

``tensorrt`` is imported only inside these functions, so this module loads anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edge_agent.runtime.cuda_buffers import GpuInfo

NOT_INSTALLED = "skipped: TensorRT not installed"


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
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_mb: int
    dla_core: int | None
    timing_cache: str = "timing.cache"
    steps: list[EngineStep]

    def step(self, precision: str, generation: str) -> EngineStep | None:
        """The step for ``precision`` on TensorRT ``generation`` ("8.5" or "10+"), if any."""
        return next(
            (s for s in self.steps if s.precision == precision and s.trt == generation), None
        )


def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` Python package can be imported here."""
    return importlib.util.find_spec("tensorrt") is not None


def generation(version: str) -> str:
    """The recipe generation for a TensorRT version: "8.5" below 10, "10+" from 10 on."""
    return "8.5" if int(version.split(".")[0]) < 10 else "10+"


def engine_cache_key(bundle_digest: str, gpu: GpuInfo, trt_version: str, precision: str) -> str:
    """File-name-safe key: bundle digest + GPU name and sm + TensorRT version + precision."""
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-").lower() or "gpu"
    digest = (
        re.sub(r"[^0-9a-fA-F]", "", bundle_digest)[:16]
        or hashlib.sha256(bundle_digest.encode()).hexdigest()[:16]
    )
    return f"{digest}-{gpu_slug}-{gpu.sm}-trt{trt_version}-{precision}"


def cache_calibrator(trt: Any, cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 that replays a calibration cache (no images needed)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None  # every range comes from the cache

        def read_calibration_cache(self) -> bytes:
            return cache.read_bytes()

        def write_calibration_cache(self, data: bytes) -> None:
            return None

    return CacheCalibrator()


def _network_flags(trt: Any, gen: str) -> int:
    names = ["EXPLICIT_BATCH"] if gen == "8.5" else ["STRONGLY_TYPED"]
    flags = 0
    for name in names:
        # TensorRT 11 may drop flags that became the only behaviour; absent means "always on"
        flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if flag is not None:
            flags |= 1 << int(flag)
    return flags


def build_engine(trt: Any, bundle_dir: Path, recipe: EngineRecipe, step: EngineStep) -> bytes:
    """Build one serialised engine from ``step`` of the recipe with the ``trt`` module."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, step.trt))
    parser = trt.OnnxParser(network, logger)
    onnx_path = bundle_dir / step.onnx
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser refused it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, recipe.workspace_mb << 20)
    shape = (3, recipe.image_size, recipe.image_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(
        recipe.input,
        (recipe.min_batch, *shape),
        (recipe.opt_batch, *shape),
        (recipe.max_batch, *shape),
    )
    config.add_optimization_profile(profile)
    if step.trt == "8.5":
        for flag in step.flags:
            if flag in ("FP16", "INT8"):
                config.set_flag(getattr(trt.BuilderFlag, flag))
        if step.calibration_cache:
            config.int8_calibrator = cache_calibrator(trt, bundle_dir / step.calibration_cache)
            config.set_calibration_profile(profile)
    if recipe.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = recipe.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build the {step.precision} engine from {onnx_path}")
    return bytes(plan)


def cached_engine(
    bundle_dir: Path,
    recipe: EngineRecipe,
    precision: str,
    cache_dir: Path,
    key: str,
) -> Path:
    """The engine file for ``key`` under ``cache_dir``, built from the recipe when missing."""
    import tensorrt as trt

    path = cache_dir / f"{key}.plan"
    if path.is_file() and path.stat().st_size > 0:
        return path
    gen = generation(trt.__version__)
    step = recipe.step(precision, gen)
    if step is None:
        raise RuntimeError(
            f"the bundle's recipe has no {precision} step for TensorRT {gen} "
            f"(it has {[(s.precision, s.trt) for s in recipe.steps]})"
        )
    plan = build_engine(trt, bundle_dir, recipe, step)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(plan)
    os.replace(tmp, path)  # a half-written engine is never picked up as cached
    return path
