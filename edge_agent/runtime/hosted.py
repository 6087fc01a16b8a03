"""Precision-choice candidates the inference worker hosts: what its ``load`` message says for
TensorRT engines (the recipe's build specs, cached by bundle, GPU and TensorRT) and for ONNX
Runtime sessions, and why TensorRT cannot be a candidate when the worker's Python lacks it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.runtime.backend import INPUT_NAME, Backend, BackendError
from edge_agent.runtime.cuda_buffers import GpuInfo
from edge_agent.runtime.ort_backend import provider_options
from edge_agent.runtime.trt_build import EngineBuildError, check_version, generation
from edge_agent.runtime.trt_engine import engine_cache_key, timing_cache_path
from edge_agent.runtime.trt_recipe import EngineRecipe
from edge_agent.runtime.worker_client import WorkerBackend, WorkerSettings, probe_worker

if TYPE_CHECKING:
    from edge_agent.runtime.precision import BundleInfo, SelectionSettings

ORT_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@functools.lru_cache(maxsize=8)
def worker_hello(python: str) -> dict[str, Any]:
    """The worker's ``hello`` under ``python`` (asked once per process)."""
    return probe_worker(python)


def tensorrt_skip(settings: WorkerSettings) -> str | None:
    """Why the worker cannot host TensorRT candidates ("skipped: ..."), or None when it can."""
    try:
        hello = worker_hello(settings.python)
    except BackendError as exc:
        return f"skipped: the inference worker does not start under {settings.python}: {exc}"
    if not hello.get("tensorrt"):
        why = hello.get("tensorrt_error") or "no tensorrt module"
        return f"skipped: TensorRT not installed for {settings.python} ({why})"
    try:
        check_version(str(hello["tensorrt"]))
    except EngineBuildError as exc:
        return f"skipped: {exc}"
    if not hello.get("gpu"):
        return (
            f"skipped: no CUDA GPU visible to the inference worker ({settings.python}); on a "
            "Jetson the service user must be in the video group"
        )
    return None


def _outputs(info: BundleInfo) -> dict[str, list[int]]:
    return {name: list(shape) for name, shape in info.task.output_shapes().items()}


def _tensorrt_load(
    precision: str, slot_dir: Path, info: BundleInfo, cache_dir: Path, hello: dict[str, Any]
) -> dict[str, Any]:
    version, gpu = str(hello["tensorrt"]), GpuInfo(**hello["gpu"])
    recipe = EngineRecipe(**dict(info.recipe or {}))
    recipe = recipe.model_copy(update={"channels": info.task.input.channels})
    step = recipe.step(precision, generation(version))
    if step is None:
        raise BackendError(
            f"the bundle's recipe has no {precision} step for TensorRT {version} "
            f"(it has {[(s.precision, s.trt) for s in recipe.steps]})"
        )
    timing = timing_cache_path(cache_dir, gpu, version, recipe.timing_cache)
    specs = recipe.build_specs(step, slot_dir, timing)
    digest = info.digest or "nodigest"
    engines = []
    for spec in specs:  # named as TrtBackend names them: one cache for both
        key = engine_cache_key(digest, gpu, version, precision, spec.profile)
        engines.append({"spec": spec.to_json(), "path": str(cache_dir / f"{key}.plan")})
    return {
        "kind": "tensorrt",
        "engines": engines,
        "input": INPUT_NAME,
        "outputs": _outputs(info),
        "max_batch": max(spec.batches[2] for spec in specs),
    }


def _onnxruntime_load(
    precision: str, slot_dir: Path, info: BundleInfo, settings: SelectionSettings
) -> dict[str, Any]:
    cache = settings.cache_dir
    engines = cache / f"ort-{(info.digest or 'nodigest')[:16]}-{precision}" if cache else None
    size, channels = info.preprocess.size, info.task.input.channels
    providers = [
        [name, options]
        for name in ORT_PREFERENCE
        if (
            options := provider_options(
                name,
                precision,
                engines,
                input_shape=(channels, size, size),
                max_batch=settings.batch,
            )
        )
        is not None
    ]
    return {
        "kind": "onnxruntime",
        "model": str(slot_dir / info.files[precision]),
        "providers": providers,
        "threads": settings.threads,
        "input": INPUT_NAME,
        "outputs": _outputs(info),
        "max_batch": settings.batch,
    }


def open_hosted(
    backend: str,
    precision: str,
    slot_dir: Path,
    info: BundleInfo,
    settings: SelectionSettings,
    log: Callable[[str], None] = lambda s: None,
) -> Backend:
    """Load one candidate in a new inference worker (TensorRT engines built there if missing)."""
    worker = settings.worker
    assert worker is not None
    if backend == "tensorrt":
        skip = tensorrt_skip(worker)
        if skip is not None:
            raise BackendError(skip)
        if info.recipe is None or settings.cache_dir is None:
            raise BackendError("skipped: no engine recipe in the bundle or no engine cache")
        cache_dir = settings.cache_dir

        def load(hello: dict[str, Any]) -> dict[str, Any]:
            return _tensorrt_load(precision, slot_dir, info, cache_dir, hello)

    elif backend == "onnxruntime":

        def load(hello: dict[str, Any]) -> dict[str, Any]:
            return _onnxruntime_load(precision, slot_dir, info, settings)

    else:
        raise BackendError(f"the inference worker hosts tensorrt or onnxruntime, not {backend!r}")
    return WorkerBackend(
        slot_dir,
        precision,
        image_size=info.preprocess.size,
        task=info.task,
        kind=backend,
        settings=worker,
        load=load,
        log=log,
    )
