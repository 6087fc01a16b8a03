"""A small fake ``tensorrt`` module that records what the engine builder asks of it."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any


class _Recorder:
    """Any attribute is a method that records its call and returns ``self`` (or a fixed value)."""

    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]], **returns: Any) -> None:
        self._calls, self._returns = calls, returns

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any) -> Any:
            self._calls.append((name, args))
            return self._returns.get(name, self)

        return method


class _Config(_Recorder):
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._calls.append((f"{name}=", (value,)))


class _Timing:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return self.blob + b"+tuned"


GPU_LAYERS = {"Layers": [{"Name": "conv1 + relu1", "LayerType": "CaskConvolution"}]}


def fake_trt(
    *,
    network_flag_names: tuple[str, ...] = ("EXPLICIT_BATCH", "STRONGLY_TYPED"),
    plan: Any = b"P",
    layers: dict[str, Any] | None = None,
    version: str = "8.5.2.2",
    layer_types: tuple[str, ...] = ("CONVOLUTION", "ACTIVATION"),
) -> SimpleNamespace:
    """A ``tensorrt`` stand-in whose ``calls`` list records what the builder asked for; its
    runtime's engine inspector answers ``layers`` (JSON) for every engine."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    info = json.dumps(GPU_LAYERS if layers is None else layers)

    class Inspector:
        def get_engine_information(self, fmt: str) -> str:
            calls.append(("get_engine_information", (fmt,)))
            return info

    class Engine:
        def create_engine_inspector(self) -> Inspector:
            return Inspector()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def __setattr__(self, name: str, value: Any) -> None:
            calls.append((f"runtime.{name}=", (value,)))

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            calls.append(("deserialize_cuda_engine", (data,)))
            return Engine()

    timing: dict[str, _Timing] = {}

    def create_timing_cache(blob: bytes) -> _Timing:
        calls.append(("create_timing_cache", (blob,)))
        timing["cache"] = _Timing(blob)
        return timing["cache"]

    config = _Config(calls)
    object.__setattr__(config, "create_timing_cache", create_timing_cache)
    object.__setattr__(config, "get_timing_cache", lambda: timing["cache"])
    profile = _Recorder(calls)
    network = SimpleNamespace(
        num_layers=len(layer_types),
        get_layer=lambda i: SimpleNamespace(type=layer_types[i]),
    )

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            calls.append(("create_network", (flags,)))
            return network

        def create_builder_config(self) -> Any:
            return config

        def create_optimization_profile(self) -> Any:
            return profile

        def build_serialized_network(self, net: Any, cfg: Any) -> Any:
            calls.append(("build", ()))
            return plan

    class OnnxParser:
        def __init__(self, net: Any, logger: Any) -> None:
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            if data.startswith(b"bad"):
                self.num_errors = 1
                return False
            return True

        def get_error(self, i: int) -> str:
            return "Unsupported op Foo"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    flag_values = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    return SimpleNamespace(
        __version__=version,
        calls=calls,
        Runtime=Runtime,
        LayerInformationFormat=SimpleNamespace(JSON="JSON", ONELINE="ONELINE"),
        ProfilingVerbosity=SimpleNamespace(DETAILED="DETAILED"),
        Logger=Logger,
        Builder=Builder,
        OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=SimpleNamespace(
            **{n: flag_values[n] for n in network_flag_names}
        ),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        DeviceType=SimpleNamespace(DLA="DLA"),
        LayerType=SimpleNamespace(QUANTIZE="QUANTIZE"),
        IInt8EntropyCalibrator2=object,
    )


DLA_LAYERS = {
    "Layers": [
        {"Name": "images to nvm", "LayerType": "Reformat"},
        {"Name": "{ForeignNode[/stem/Conv.../blocks/Add]}", "LayerType": "DLA"},
        {"Name": "images copy finish", "LayerType": "Reformat"},
        {"Name": "/head/Gemm", "LayerType": "CaskGemm"},
        {"Name": "grade_logits from nvm", "LayerType": "Reformat"},
    ]
}


def names(trt: SimpleNamespace) -> list[str]:
    """The recorded calls' names, in order."""
    return [name for name, _ in trt.calls]


def args(trt: SimpleNamespace, name: str) -> list[tuple[Any, ...]]:
    """The arguments of every recorded call of ``name``."""
    return [a for n, a in trt.calls if n == name]
