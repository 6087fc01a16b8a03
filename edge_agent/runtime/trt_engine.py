"""The device's engine cache: engines built from a bundle's recipe, keyed by bundle, GPU and TRT.

``tensorrt`` is imported only inside :func:`cached_engine`, so this module loads anywhere; the build
itself is :func:`edge_agent.runtime.trt_build.build_engine`, shared with the server's export.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from edge_agent.runtime.cuda_buffers import GpuInfo

# NOT_INSTALLED and tensorrt_available moved to trt_build.py; "X as X" keeps them importable here
from edge_agent.runtime.trt_build import NOT_INSTALLED as NOT_INSTALLED
from edge_agent.runtime.trt_build import build_engine, generation
from edge_agent.runtime.trt_build import tensorrt_available as tensorrt_available
from edge_agent.runtime.trt_recipe import EngineRecipe


def _gpu_slug(gpu: GpuInfo) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-").lower() or "gpu"


def engine_cache_key(bundle_digest: str, gpu: GpuInfo, trt_version: str, precision: str) -> str:
    """File-name-safe key: bundle digest + GPU name and sm + TensorRT version + precision."""
    digest = (
        re.sub(r"[^0-9a-fA-F]", "", bundle_digest)[:16]
        or hashlib.sha256(bundle_digest.encode()).hexdigest()[:16]
    )
    return f"{digest}-{_gpu_slug(gpu)}-{gpu.sm}-trt{trt_version}-{precision}"


def timing_cache_path(cache_dir: Path, gpu: GpuInfo, trt_version: str, name: str) -> Path:
    """The timing cache under ``cache_dir`` for this GPU and TensorRT (shared by every bundle)."""
    return cache_dir / f"{_gpu_slug(gpu)}-{gpu.sm}-trt{trt_version}.{Path(name).name}"


def cached_engine(
    bundle_dir: Path,
    recipe: EngineRecipe,
    precision: str,
    cache_dir: Path,
    key: str,
    timing_cache: Path | None = None,
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
    plan = build_engine(trt, recipe.build_spec(step, bundle_dir, timing_cache))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(plan)
    os.replace(tmp, path)  # a half-written engine is never picked up as cached
    return path
