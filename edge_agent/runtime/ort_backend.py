"""ONNX Runtime backend: TensorRT, then CUDA, then CPU execution providers, whichever exist."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_agent.runtime.backend import INPUT_NAME, Backend, BackendError, Outputs, register_backend
from models import DR_GRADING, TaskSpec

PREFERENCE: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


DEFAULT_MAX_BATCH = 32
"""The TensorRT provider's largest batch (its optimisation profile's max)."""
DEFAULT_TRT_WORKSPACE = 1 << 30
"""The TensorRT provider's workspace limit in bytes: on a Jetson the GPU shares the CPU's memory."""


def _trt_profile(input_shape: tuple[int, ...], max_batch: int) -> dict[str, str]:
    """Explicit min/opt/max shapes ("images:1x3x224x224"): without them the provider rebuilds
    its engine whenever a batch widens the range (minutes on a Xavier)."""
    dims = "x".join(str(d) for d in input_shape)
    opt = min(8, max_batch)
    return {
        "trt_profile_min_shapes": f"{INPUT_NAME}:1x{dims}",
        "trt_profile_opt_shapes": f"{INPUT_NAME}:{opt}x{dims}",
        "trt_profile_max_shapes": f"{INPUT_NAME}:{max_batch}x{dims}",
    }


def provider_options(
    name: str,
    precision: str,
    cache_dir: Path | None,
    *,
    input_shape: tuple[int, ...] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_bytes: int = DEFAULT_TRT_WORKSPACE,
) -> dict[str, str] | None:
    """The options of provider ``name`` (None: do not use it: the TensorRT provider without an
    engine cache would build its engines again at every start, minutes each)."""
    if name != "TensorrtExecutionProvider":
        return {}
    if cache_dir is None:
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    options = {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_max_workspace_size": str(workspace_bytes),
        "trt_fp16_enable": str(precision == "fp16"),
        # Q/DQ models need the INT8 flag on TensorRT 8; ranges come from the graph
        "trt_int8_enable": str(precision == "int8"),
    }
    if input_shape is not None:
        options.update(_trt_profile(input_shape, max_batch))
    return options


def provider_chain(
    precision: str,
    cache_dir: Path | None,
    wanted: Sequence[str] | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_bytes: int = DEFAULT_TRT_WORKSPACE,
) -> list[tuple[str, dict[str, str]]]:
    """The providers to ask for, best first, each with its options; only those installed.

    ``input_shape`` (channels, height, width) and ``max_batch`` give the TensorRT provider an
    explicit profile; ``workspace_bytes`` caps its workspace.
    """
    if max_batch < 1 or workspace_bytes < 1:
        raise ValueError(
            f"max_batch and workspace_bytes must be >= 1 ({max_batch}, {workspace_bytes})"
        )
    available = set(ort.get_available_providers())
    chain: list[tuple[str, dict[str, str]]] = []
    for name in wanted if wanted is not None else PREFERENCE:
        if name not in available:
            continue
        options = provider_options(
            name, precision, cache_dir, input_shape=input_shape, max_batch=max_batch,
            workspace_bytes=workspace_bytes,
        )  # fmt: skip
        if options is not None:
            chain.append((name, options))
    if not chain:
        raise BackendError(
            f"none of the ONNX Runtime providers {list(wanted or PREFERENCE)} is installed "
            f"(available: {sorted(available)})"
        )
    return chain


@register_backend("onnxruntime")
class OrtBackend(Backend):
    """An ONNX Runtime session over one of the bundle's ONNX files."""

    def __init__(
        self,
        model_path: Path,
        precision: str,
        *,
        image_size: int,
        task: TaskSpec = DR_GRADING,
        cache_dir: Path | None = None,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        trt_workspace_bytes: int = DEFAULT_TRT_WORKSPACE,
    ) -> None:
        """``cache_dir``: the TensorRT provider's engine cache; ``threads``: intra-op (0: ORT's);
        ``max_batch`` and ``trt_workspace_bytes``: the TensorRT provider's profile and workspace."""
        super().__init__(model_path, precision, image_size, task)
        if not self.model_path.is_file():
            raise BackendError(f"model file {self.model_path} does not exist")
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        shape = (task.input.channels, image_size, image_size)
        chain = provider_chain(
            precision,
            cache_dir,
            providers,
            input_shape=shape,
            max_batch=max_batch,
            workspace_bytes=trt_workspace_bytes,
        )
        self._trt_max_batch = max_batch
        try:
            self._session = ort.InferenceSession(
                str(self.model_path),
                sess_options=opts,
                providers=[name for name, _ in chain],
                provider_options=[o for _, o in chain],
            )
        except Exception as e:  # ORT raises its own exception types
            raise BackendError(f"ONNX Runtime cannot load {self.model_path}: {e}") from None
        self._check_signature()
        self._threads = threads

    def _check_signature(self) -> None:
        """Refuse a model whose input or outputs are not the task's (names, channels, widths)."""
        task = self.task
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise BackendError(
                f"{self.model_path}: expected one input {INPUT_NAME!r}, has "
                f"{[i.name for i in inputs]}"
            )
        channels = inputs[0].shape[1] if len(inputs[0].shape) == 4 else None
        if isinstance(channels, int) and channels != task.input.channels:
            raise BackendError(
                f"{self.model_path}: input {INPUT_NAME!r} has {channels} channels, task "
                f"{task.name} input.channels is {task.input.channels}"
            )
        declared = {o.name: o.shape for o in self._session.get_outputs()}
        missing = [name for name in self.output_names if name not in declared]
        if missing:
            raise BackendError(
                f"{self.model_path}: outputs {missing} missing (has {list(declared)}); task "
                f"{task.name} names its outputs {list(self.output_names)}"
            )
        for name, shape in task.output_shapes().items():
            width = declared[name][1:] if declared[name] else None
            if width and all(isinstance(d, int) for d in width) and tuple(width) != shape:
                raise BackendError(
                    f"{self.model_path}: output {name!r} is N x {tuple(width)}, task "
                    f"{task.name} needs N x {shape}"
                )

    @property
    def providers(self) -> list[str]:
        """The providers the session actually uses, best first."""
        return list(self._session.get_providers())

    @property
    def max_batch(self) -> int | None:
        """The TensorRT provider's profile maximum when it runs the model, else no limit."""
        return self._trt_max_batch if "TensorrtExecutionProvider" in self.providers else None

    def describe(self) -> dict[str, Any]:
        """As :meth:`Backend.describe`, plus the thread setting and ONNX Runtime version."""
        return {**super().describe(), "threads": self._threads, "onnxruntime": ort.__version__}

    def _run(self, images: np.ndarray) -> Outputs:
        names = self.output_names
        arrays = self._session.run(list(names), {INPUT_NAME: images})
        return Outputs(*(np.asarray(a, np.float32) for a in arrays), names=names)
