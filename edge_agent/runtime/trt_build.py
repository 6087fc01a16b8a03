"""The one TensorRT engine builder, for the server's export and the device (8.5, 10 and 11).

TensorRT 8.5 and 8.6 build an explicit-batch network with FP16/INT8 builder flags: INT8 from the
Q/DQ ONNX (explicit quantization, no calibrator), except on DLA, where the fp32 ONNX is built with a
calibrator that replays the calibration cache. 10 and 11 build a strongly typed network whose
precision comes from the ONNX itself (fp16 weights, Q/DQ INT8), with no builder flags and no
calibrator. An optional timing cache is read before and written after each build;
:func:`ensure_engine` also writes where each layer runs (``<engine>.layers.json``).

This module must stay importable by Python 3.8 (JetPack 5's TensorRT exists only there): the
standard library only, ``tensorrt`` imported lazily, nothing else of Fovea. ``make lint`` parses it
as Python 3.8 (ruff's per-file target version) and ``tests/edge_agent/runtime/test_trt_build.py``
checks its imports and runtime-evaluated annotations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

NOT_INSTALLED = "skipped: TensorRT not installed"
CALIBRATION_CACHE = "calibration.cache"
"""The INT8 calibration cache's file name in an export (TensorRT's text format)."""
TIMING_CACHE = "timing.cache"
"""The timing cache's file name in an export."""
GENERATIONS = ("8.5", "10+")
"""Recipe generations: "8.5" for TensorRT 8.5 and 8.6 (builder flags), "10+" for 10 and 11."""
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


def check_version(version: str) -> str:
    """The recipe generation for a TensorRT version ("8.5" for 8.5/8.6, "10+" for 10/11).

    Raises EngineBuildError, with the reason and what to do, for any other version.
    """
    major, minor, _ = _version_parts(version)
    if major < 8 or (major == 8 and minor < 5):
        # 8.4 (JetPack 5.0.x) lacks execute_async_v3, num_io_tensors, get_tensor_profile_shape
        raise EngineBuildError(
            f"TensorRT {version} is too old: Fovea runs engines with execute_async_v3 and the "
            "tensor API (num_io_tensors, get_tensor_profile_shape), which arrived in 8.5; "
            "upgrade to JetPack 5.1.x, TensorRT 8.5.2"
        )
    if major == 8 or major in (10, 11):
        return "8.5" if major == 8 else "10+"
    if major == 9:
        raise EngineBuildError(
            f"TensorRT {version}: the 9.x releases are not supported by this Fovea version; "
            "use TensorRT 8.5/8.6 or 10 and later"
        )
    raise EngineBuildError(
        f"TensorRT {version} is not supported by this Fovea version (it knows 8.5, 8.6, 10 "
        "and 11); use a supported TensorRT or a newer Fovea"
    )


def generation(version: str) -> str:
    """The recipe generation for a TensorRT version (see :func:`check_version`, which raises)."""
    return check_version(version)


def version_tag(version: str) -> str:
    """Major, minor and two-digit patch run together ("8.5.2.2" -> "8502"), for directory names."""
    major, minor, patch = _version_parts(version)
    return f"{major}{minor}" + ("" if patch is None else f"{patch:02d}")


@dataclass(frozen=True)
class BuildSpec:
    """One engine build as plain data: the ONNX file, generation, input profile and options.

    ``batches`` is (min, opt, max) for the input's first dimension; ``input_shape`` is the rest
    (e.g. ``(3, 224, 224)``); a DLA build has one static batch (min = opt = max). The
    ``calibration_cache`` is used only on 8.5 (recipes give it to DLA INT8 steps, which build the
    fp32 ONNX; elsewhere INT8 comes from Q/DQ); ``timing_cache`` is read when it exists and
    rewritten after a successful build.
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
        if self.dla_core is not None and self.precision == "fp32":
            raise EngineBuildError(
                f"{self.onnx}: fp32 cannot run on DLA (it computes in FP16 or INT8); build fp32 "
                "for the GPU (dla_core None)"
            )
        if self.dla_core is not None and not low == opt == high:
            raise EngineBuildError(
                f"{self.onnx}: DLA needs a static batch (min = opt = max), not {self.batches}; "
                "with a dynamic profile every layer falls back to the GPU"
            )

    @property
    def profile(self) -> str | None:
        """``"dla<core>-b<batch>"`` for a DLA build (one static batch); None for the GPU's."""
        if self.dla_core is None:
            return None
        return f"dla{self.dla_core}-b{self.batches[2]}"

    def to_json(self) -> dict[str, Any]:
        """The spec as plain JSON data (paths as strings), for :meth:`from_json` elsewhere."""
        data: dict[str, Any] = {}
        for name in _SPEC_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            data[name] = value
        return data

    def ensure(self, trt: Any, path: Path) -> Path:
        """:func:`ensure_engine` for this spec (for code that sees only ``BuildSpec``)."""
        return ensure_engine(trt, self, path)

    @staticmethod
    def layers_file(engine: Path) -> Path:
        """:func:`layers_path`: where an engine's layer placement is written."""
        return layers_path(engine)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildSpec:
        """A spec from :meth:`to_json`'s data; raises EngineBuildError naming a bad field."""
        unknown = sorted(set(data) - set(_SPEC_FIELDS))
        missing = [n for n in _SPEC_FIELDS[:6] if n not in data]
        if unknown or missing:
            raise EngineBuildError(f"build spec: unknown fields {unknown}, missing {missing}")
        try:
            return cls(
                onnx=Path(data["onnx"]),
                generation=str(data["generation"]),
                input_name=str(data["input_name"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                batches=_three(data["batches"]),
                workspace_mb=int(data["workspace_mb"]),
                precision=str(data.get("precision", "fp32")),
                flags=tuple(str(f) for f in data.get("flags", ())),
                calibration_cache=_path_or_none(data.get("calibration_cache")),
                timing_cache=_path_or_none(data.get("timing_cache")),
                dla_core=None if data.get("dla_core") is None else int(data["dla_core"]),
            )
        except (TypeError, ValueError) as e:
            raise EngineBuildError(f"build spec: {e}") from None

    def builder_flags(self) -> tuple[str, ...]:
        """The ``trt.BuilderFlag`` names to set: the recipe's FP16/INT8 on 8.5, none on 10+."""
        if self.generation != "8.5":
            return ()  # strongly typed: precision flags are an error on 10 and gone in 11
        return tuple(f for f in self.flags if f in PRECISION_FLAGS)

    def calibrator_cache(self) -> Path | None:
        """The calibration cache the build replays: 8.5 only (10+ takes its ranges from Q/DQ)."""
        return self.calibration_cache if self.generation == "8.5" else None


_SPEC_FIELDS = tuple(f.name for f in fields(BuildSpec))
"""In order: the first six have no default."""


def _three(values: Any) -> tuple[int, int, int]:
    low, opt, high = (int(v) for v in values)
    return low, opt, high


def _path_or_none(value: Any) -> Path | None:
    return None if value is None else Path(value)


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


def _refuse_qdq_with_calibrator(trt: Any, network: Any, spec: BuildSpec) -> None:
    """A Q/DQ (explicitly quantized) network must not be given a calibration table."""
    quantize = trt.LayerType.QUANTIZE
    if any(network.get_layer(i).type == quantize for i in range(network.num_layers)):
        raise EngineBuildError(
            f"{spec.onnx} is Q/DQ (explicitly quantized) but the spec gives it the calibration "
            f"cache {spec.calibration_cache}: build a Q/DQ model without one, or calibrate the "
            "fp32 model"
        )


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
    detailed = getattr(getattr(trt, "ProfilingVerbosity", None), "DETAILED", None)
    if detailed is not None:  # 8.2 and later: the engine inspector then names every layer
        config.profiling_verbosity = detailed
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
        _refuse_qdq_with_calibrator(trt, network, spec)
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


_TRANSFER_SUFFIXES = (" to nvm", " from nvm", " copy finish")
"""DLA engines move tensors to and from the DLA's memory in layers named like these."""


def _layer_device(layer: Any) -> tuple[str, str]:
    """(name, "dla" | "gpu" | "transfer") of one engine-inspector layer (a name or a mapping)."""
    if isinstance(layer, dict):
        name, kind = str(layer.get("Name", "")), str(layer.get("LayerType", ""))
    else:
        name, kind = str(layer), ""
    if name.endswith(_TRANSFER_SUFFIXES):
        return name, "transfer"
    # TensorRT compiles each DLA subgraph into one "{ForeignNode[first...last]}" layer
    if "ForeignNode" in name or "dla" in kind.lower():
        return name, "dla"
    return name, "gpu"


def placement_summary(info: dict[str, Any], dla_core: int | None) -> dict[str, Any]:
    """How many layers of an engine-inspector JSON run on the DLA and on the GPU, with a
    warning when a DLA build left layers (or everything) on the GPU."""
    devices = [_layer_device(layer) for layer in info.get("Layers", [])]
    gpu = [name for name, device in devices if device == "gpu"]
    dla = sum(1 for _, device in devices if device == "dla")
    warning = None
    if dla_core is not None and dla == 0:
        warning = f"no layer runs on DLA core {dla_core}: the whole engine fell back to the GPU"
    elif dla_core is not None and gpu:
        warning = f"{len(gpu)} layer(s) fell back from DLA core {dla_core} to the GPU"
    return {
        "dla_core": dla_core,
        "layers": len(devices),
        "dla": dla,
        "gpu": len(gpu),
        "transfers": sum(1 for _, device in devices if device == "transfer"),
        "gpu_layers": gpu,
        "warning": warning,
    }


def layer_placement(trt: Any, plan: bytes, dla_core: int | None = None) -> dict[str, Any]:
    """Where the layers of the serialised engine ``plan`` run (see :func:`placement_summary`).

    Uses TensorRT's engine inspector (8.2 and later); complete only for engines built with
    DETAILED profiling verbosity, as :func:`build_engine` does. An engine that cannot be loaded
    here (a DLA engine on a machine without one) gives ``error`` and no counts.
    """
    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if dla_core is not None:
            runtime.DLA_core = dla_core  # a DLA engine deserialises only onto a DLA core
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            return {"dla_core": dla_core, "error": "TensorRT could not load the engine here"}
        inspector = engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except (RuntimeError, AttributeError, TypeError, ValueError) as e:
        return {"dla_core": dla_core, "error": f"engine inspector failed: {e}"}
    return placement_summary(info, dla_core)


def layers_path(engine: Path) -> Path:
    """Where :func:`ensure_engine` writes the layer placement of ``engine``."""
    return engine.with_name(engine.name + ".layers.json")


def ensure_engine(trt: Any, spec: BuildSpec, path: Path) -> Path:
    """``path``, built from ``spec`` first when missing or empty, with ``<engine>.layers.json``
    (written for an engine cached without one too).

    Both files are written atomically (the engine last), so a crash never leaves an engine that
    looks complete; raises EngineBuildError when the build fails.
    """
    built = path.is_file() and path.stat().st_size > 0
    if built and layers_path(path).is_file():
        return path
    plan = path.read_bytes() if built else build_engine(trt, spec)
    placement = layer_placement(trt, plan, spec.dla_core)
    placement["precision"] = spec.precision
    _write_atomically(layers_path(path), json.dumps(placement, indent=2).encode())
    if not built:
        _write_atomically(path, plan)
    return path
