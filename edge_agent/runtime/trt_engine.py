"""The device's engine cache: engines built from a bundle's recipe, keyed by bundle, GPU and TRT.

``tensorrt`` is imported only inside :func:`cached_engines`, so this module loads anywhere; the
build itself is :func:`edge_agent.runtime.trt_build.ensure_engine`, shared with the server's export
and the out-of-process worker. A DLA step builds one engine per batch size, each keyed by it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from edge_agent.runtime.cuda_buffers import GpuInfo

# NOT_INSTALLED and tensorrt_available moved to trt_build.py; "X as X" keeps them importable here
from edge_agent.runtime.trt_build import NOT_INSTALLED as NOT_INSTALLED
from edge_agent.runtime.trt_build import BuildSpec, ensure_engine, generation
from edge_agent.runtime.trt_build import tensorrt_available as tensorrt_available
from edge_agent.runtime.trt_recipe import EngineRecipe


def _gpu_slug(gpu: GpuInfo) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-").lower() or "gpu"


def engine_cache_key(
    bundle_digest: str,
    gpu: GpuInfo,
    trt_version: str,
    precision: str,
    profile: str | None = None,
) -> str:
    """File-name-safe key: bundle digest + GPU name and sm + TensorRT version + precision, and
    the profile (``BuildSpec.profile``, e.g. ``dla0-b8``) of a one-batch DLA engine."""
    digest = (
        re.sub(r"[^0-9a-fA-F]", "", bundle_digest)[:16]
        or hashlib.sha256(bundle_digest.encode()).hexdigest()[:16]
    )
    key = f"{digest}-{_gpu_slug(gpu)}-{gpu.sm}-trt{trt_version}-{precision}"
    return key if profile is None else f"{key}-{profile}"


def timing_cache_path(cache_dir: Path, gpu: GpuInfo, trt_version: str, name: str) -> Path:
    """The timing cache under ``cache_dir`` for this GPU and TensorRT (shared by every bundle)."""
    return cache_dir / f"{_gpu_slug(gpu)}-{gpu.sm}-trt{trt_version}.{Path(name).name}"


def _tensorrt() -> Any:
    import tensorrt

    return tensorrt


def _specs(
    bundle_dir: Path, recipe: EngineRecipe, precision: str, timing: Path | None, trt: Any
) -> list[BuildSpec]:
    gen = generation(trt.__version__)
    step = recipe.step(precision, gen)
    if step is None:
        raise RuntimeError(
            f"the bundle's recipe has no {precision} step for TensorRT {gen} "
            f"(it has {[(s.precision, s.trt) for s in recipe.steps]})"
        )
    return recipe.build_specs(step, bundle_dir, timing)


def _engine_path(cache_dir: Path, key: str, spec: BuildSpec) -> Path:
    return cache_dir / f"{key if spec.profile is None else f'{key}-{spec.profile}'}.plan"


def cached_engines(
    bundle_dir: Path,
    recipe: EngineRecipe,
    precision: str,
    cache_dir: Path,
    key: str,
    timing_cache: Path | None = None,
    trt: Any = None,
) -> list[tuple[BuildSpec, Path]]:
    """Every engine of the recipe's ``precision`` step under ``cache_dir``, built when missing:
    one for a GPU step, one per batch size (``<key>-dla<core>-b<batch>.plan``) for a DLA step.

    ``key`` is :func:`engine_cache_key` without a profile; ``trt`` defaults to ``tensorrt``.
    Raises EngineBuildError (a RuntimeError) for an unsupported TensorRT or a failed build.
    """
    trt = _tensorrt() if trt is None else trt
    specs = _specs(bundle_dir, recipe, precision, timing_cache, trt)
    return [(s, ensure_engine(trt, s, _engine_path(cache_dir, key, s))) for s in specs]


def cached_engine(
    bundle_dir: Path,
    recipe: EngineRecipe,
    precision: str,
    cache_dir: Path,
    key: str,
    timing_cache: Path | None = None,
    trt: Any = None,
) -> Path:
    """The engine file for ``key`` under ``cache_dir``, built from the recipe when missing.

    For a DLA step only its smallest-batch engine (static: that batch is then the backend's
    largest); :func:`cached_engines` builds them all.
    """
    trt = _tensorrt() if trt is None else trt
    spec = _specs(bundle_dir, recipe, precision, timing_cache, trt)[0]
    return ensure_engine(trt, spec, _engine_path(cache_dir, key, spec))
