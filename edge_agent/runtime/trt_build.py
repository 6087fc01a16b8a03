"""The one TensorRT engine builder, for the server's export and the device (8.5, 10 and 11).

TensorRT 8.5 builds the fp32 ONNX with an explicit-batch network, FP16/INT8 builder flags and, for
INT8, a calibrator that replays the calibration cache; 10 and 11 build a strongly typed network
whose precision comes from the ONNX itself (fp16 weights, Q/DQ INT8), with no builder flags and no
calibrator. An optional timing cache is read before and written after each build.

This module must stay importable by Python 3.8 (JetPack 5's TensorRT exists only there): the
standard library only, ``tensorrt`` imported lazily, nothing else of Fovea. ``make lint`` parses it
as Python 3.8 (ruff's per-file target version) and ``tests/edge_agent/runtime/test_trt_build.py``
checks its imports and runtime-evaluated annotations.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOT_INSTALLED = "skipped: TensorRT not installed"
CALIBRATION_CACHE = "calibration.cache"
"""The INT8 calibration cache's file name in an export (TensorRT's text format)."""
TIMING_CACHE = "timing.cache"
"""The timing cache's file name in an export."""
GENERATIONS = ("8.5", "10+")
"""Recipe generations: "8.5" for TensorRT below 10 (builder flags), "10+" (strongly typed)."""
PRECISION_FLAGS = ("FP16", "INT8")
"""The builder flags a recipe may ask for; only the "8.5" generation sets them."""


class EngineBuildError(RuntimeError):
    """An engine cannot be built: a bad spec, an ONNX TensorRT refused, or a failed build."""


def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` Python package can be imported here."""
    return importlib.util.find_spec("tensorrt") is not None


def _version_parts(version: str) -> tuple[int, int, int | None]:
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)  # "10.0.0b6": early-access builds
    if found is None:
        raise EngineBuildError(f"TensorRT version {version!r} is not of the form 8.5.2[.2]")
    major, minor, patch = found.groups()
    return int(major), int(minor), None if patch is None else int(patch)


def generation(version: str) -> str:
    """The recipe generation for a TensorRT version: "8.5" below 10, "10+" from 10 on."""
    return "8.5" if _version_parts(version)[0] < 10 else "10+"


def version_tag(version: str) -> str:
    """Major, minor and two-digit patch run together ("8.5.2.2" -> "8502"), for directory names."""
    major, minor, patch = _version_parts(version)
    return f"{major}{minor}" + ("" if patch is None else f"{patch:02d}")


@dataclass(frozen=True)
class BuildSpec:
    """One engine build as plain data: the ONNX file, generation, input profile and options.

    ``batches`` is (min, opt, max) for the input's first dimension; ``input_shape`` is the rest
    (e.g. ``(3, 224, 224)``). ``calibration_cache`` is used only on 8.5 (recipes give it to INT8
    steps); ``timing_cache`` is read when it exists and rewritten after a successful build.
    """

    onnx: Path
    generation: str
    input_name: str
    input_shape: tuple[int, ...]
    batches: tuple[int, int, int]
    workspace_mb: int
    precision: str = "fp32"
    flags: tuple[str, ...] = ()
    calibration_cache: Path | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None

    def __post_init__(self) -> None:
        if self.generation not in GENERATIONS:
            raise EngineBuildError(f"generation {self.generation!r} is not one of {GENERATIONS}")
        low, opt, high = self.batches
        if not 1 <= low <= opt <= high:
            raise EngineBuildError(
                f"batches (min, opt, max) {self.batches} must satisfy 1 <= min <= opt <= max"
            )
        if self.workspace_mb <= 0:
            raise EngineBuildError(f"workspace_mb must be positive, not {self.workspace_mb}")

    def builder_flags(self) -> tuple[str, ...]:
        """The ``trt.BuilderFlag`` names to set: the recipe's FP16/INT8 on 8.5, none on 10+."""
        if self.generation != "8.5":
            return ()  # strongly typed: precision flags are an error on 10 and gone in 11
        return tuple(f for f in self.flags if f in PRECISION_FLAGS)

    def calibrator_cache(self) -> Path | None:
        """The calibration cache the build replays: 8.5 only (10+ takes its ranges from Q/DQ)."""
        return self.calibration_cache if self.generation == "8.5" else None


def network_flags(trt: Any, gen: str) -> int:
    """``create_network`` flags: EXPLICIT_BATCH on 8.5, STRONGLY_TYPED on 10+."""
    names = ["EXPLICIT_BATCH"] if gen == "8.5" else ["STRONGLY_TYPED"]
    flags = 0
    for name in names:
        # TensorRT 11 may drop flags that became the only behaviour; absent means "always on"
        flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if flag is not None:
            flags |= 1 << int(flag)
    return flags


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


def _parse(trt: Any, network: Any, logger: Any, onnx: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx}: TensorRT's ONNX parser refused it: {errors}")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a half-written file is never read back


def build_engine(trt: Any, spec: BuildSpec) -> bytes:
    """Build one serialised engine for ``spec`` with the ``trt`` module; raises EngineBuildError."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, spec.generation))
    _parse(trt, network, logger, spec.onnx)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    low, opt, high = ((b, *spec.input_shape) for b in spec.batches)
    profile.set_shape(spec.input_name, low, opt, high)
    config.add_optimization_profile(profile)
    timing = spec.timing_cache
    if timing is not None:
        blob = timing.read_bytes() if timing.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), False)
    for flag in spec.builder_flags():
        config.set_flag(getattr(trt.BuilderFlag, flag))
    calibration = spec.calibrator_cache()
    if calibration is not None:
        config.int8_calibrator = cache_calibrator(trt, calibration)
        config.set_calibration_profile(profile)
    if spec.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = spec.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"TensorRT could not build the {spec.precision} engine from {spec.onnx}"
        )
    if timing is not None:
        _write_atomically(timing, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)
