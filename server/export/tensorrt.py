"""TensorRT engine builds (8.5 first; 10/11 strongly typed), imported lazily, never faked.

Engines are tied to the GPU and TensorRT build that made them, so they are written under
``engines/<sm>-trt<version>/``. Without TensorRT, or without a GPU, each build reports why it
was skipped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.runtime import EngineRecipe
from edge_agent.runtime.trt_engine import cache_calibrator
from server.export.recipe import CALIBRATION_CACHE, TIMING_CACHE, EngineStep

NOT_INSTALLED = "skipped: TensorRT not installed"


@dataclass(frozen=True)
class EngineBuild:
    """One engine: ``status`` is "built", "skipped: ..." or "failed: ..."."""

    precision: str
    status: str
    path: Path | None = None
    verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping for JSON."""
        return {
            "precision": self.precision,
            "status": self.status,
            "path": str(self.path) if self.path else None,
            "verified": self.verified,
        }


def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` Python package can be imported here."""
    return importlib.util.find_spec("tensorrt") is not None


def _gpu_sm() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm{major}{minor}"


def _build_one(trt: Any, export_dir: Path, recipe: EngineRecipe, step: EngineStep) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if step.trt == "8.5":
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse((export_dir / step.onnx).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{step.onnx}: TensorRT's ONNX parser refused it: {errors}")
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
    timing_path = export_dir / TIMING_CACHE
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)
    for flag in step.flags:
        if flag in ("FP16", "INT8"):
            config.set_flag(getattr(trt.BuilderFlag, flag))
    if step.calibration_cache:
        config.int8_calibrator = cache_calibrator(trt, export_dir / CALIBRATION_CACHE)
        config.set_calibration_profile(profile)
    if recipe.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = recipe.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build the {step.precision} engine")
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def build_engines(export_dir: Path, recipe: EngineRecipe) -> list[EngineBuild]:
    """Build each precision the recipe lists for this TensorRT; report skips and failures."""
    precisions = sorted({s.precision for s in recipe.steps})
    if not tensorrt_available():
        return [EngineBuild(p, NOT_INSTALLED) for p in precisions]
    sm = _gpu_sm()
    if sm is None:
        return [EngineBuild(p, "skipped: no CUDA GPU") for p in precisions]
    import tensorrt as trt

    generation = "8.5" if int(trt.__version__.split(".")[0]) < 10 else "10+"
    version = "".join(
        f"{int(p):02d}" if i == 2 else p for i, p in enumerate(trt.__version__.split(".")[:3])
    )
    out = export_dir / "engines" / f"{sm}-trt{version}"
    out.mkdir(parents=True, exist_ok=True)
    builds = []
    for step in (s for s in recipe.steps if s.trt == generation):
        try:
            plan = _build_one(trt, export_dir, recipe, step)
        except (RuntimeError, OSError) as e:
            builds.append(EngineBuild(step.precision, f"failed: {e}"))
            continue
        path = out / f"model.{step.precision}.plan"
        path.write_bytes(plan)
        builds.append(EngineBuild(step.precision, "built", path, verified=False))
    return builds
