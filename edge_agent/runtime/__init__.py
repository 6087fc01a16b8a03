"""Inference on the device: backends (ONNX Runtime, TensorRT), golden check, batching, and
precision choice (measured per bundle at install, recorded, opened when serving)."""

from edge_agent.runtime import ort_backend as _ort  # noqa: F401  (registers "onnxruntime")
from edge_agent.runtime import trt_backend as _trt  # noqa: F401  (registers "tensorrt")
from edge_agent.runtime.backend import (
    INPUT_NAME,
    PRECISIONS,
    Backend,
    BackendError,
    BackendUnavailable,
    Outputs,
    backend_names,
    create_backend,
    register_backend,
)
from edge_agent.runtime.batcher import BatcherClosed, BatcherSettings, DynamicBatcher
from edge_agent.runtime.choice import (
    ChecksFailed,
    ChoiceConfig,
    bundle_info,
    measure,
    open_checked,
    open_chosen,
    selection_path,
    selection_settings,
    serving_batch,
)
from edge_agent.runtime.golden import GPU_TOLERANCE, GoldenResult, golden_check, infer_batched
from edge_agent.runtime.golden import TOLERANCE as GOLDEN_TOLERANCE
from edge_agent.runtime.ort_backend import OrtBackend
from edge_agent.runtime.precision import (
    BundleInfo,
    Measurement,
    Selection,
    SelectionSettings,
    batch_sizes,
    choose_precision,
    open_candidate,
    open_selected,
)
from edge_agent.runtime.trt_backend import TrtBackend
from edge_agent.runtime.trt_build import (
    CALIBRATION_CACHE,
    TIMING_CACHE,
    BuildSpec,
    EngineBuildError,
    build_engine,
    check_version,
    ensure_engine,
    generation,
    layer_placement,
    layers_path,
    version_tag,
)
from edge_agent.runtime.trt_engine import (
    NOT_INSTALLED,
    EngineRecipe,
    cached_engines,
    engine_cache_key,
    tensorrt_available,
)
from edge_agent.runtime.trt_recipe import EngineStep
from edge_agent.runtime.worker_client import WorkerBackend, WorkerSettings, probe_worker

__all__ = [
    "CALIBRATION_CACHE",
    "GOLDEN_TOLERANCE",
    "GPU_TOLERANCE",
    "INPUT_NAME",
    "NOT_INSTALLED",
    "PRECISIONS",
    "TIMING_CACHE",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "BatcherClosed",
    "BatcherSettings",
    "BuildSpec",
    "BundleInfo",
    "ChecksFailed",
    "ChoiceConfig",
    "DynamicBatcher",
    "EngineBuildError",
    "EngineRecipe",
    "EngineStep",
    "GoldenResult",
    "Measurement",
    "OrtBackend",
    "Outputs",
    "Selection",
    "SelectionSettings",
    "TrtBackend",
    "WorkerBackend",
    "WorkerSettings",
    "backend_names",
    "batch_sizes",
    "build_engine",
    "bundle_info",
    "cached_engines",
    "check_version",
    "choose_precision",
    "create_backend",
    "engine_cache_key",
    "ensure_engine",
    "generation",
    "golden_check",
    "infer_batched",
    "layer_placement",
    "layers_path",
    "measure",
    "open_candidate",
    "open_checked",
    "open_chosen",
    "open_selected",
    "probe_worker",
    "register_backend",
    "selection_path",
    "selection_settings",
    "serving_batch",
    "tensorrt_available",
    "version_tag",
]
