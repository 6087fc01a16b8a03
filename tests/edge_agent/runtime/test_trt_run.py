"""Running TensorRT engines, against a fake ``tensorrt`` module with TensorRT 8.5's named-tensor
API (TensorRT does not install here): padding on static (DLA) engines, the DLA core set before
deserialising, 8.4 refused by name, errors freeing what was allocated, and a backend library's
own exceptions never escaping the TensorRT backend or precision choice."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

import edge_agent.runtime.trt_backend as trt_backend
import edge_agent.runtime.trt_run as trt_run
from edge_agent.runtime import (
    Backend,
    BackendError,
    BundleInfo,
    Outputs,
    SelectionSettings,
    choose_precision,
    register_backend,
)
from edge_agent.runtime.cuda_buffers import GpuInfo
from edge_agent.runtime.trt_run import EngineRunError, EngineRunner, EngineSet

SHAPES = {"images": (3, 4, 4), "grade_logits": (5,), "gradable_logit": (1,)}


class FakeBuffer:
    """DeviceBuffer's interface over plain numpy (no GPU): the device copy is the host one."""

    live: ClassVar[dict[int, FakeBuffer]] = {}
    freed: ClassVar[list[tuple[int, ...]]] = []

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.host = shape, np.zeros(shape, dtype)
        self.nbytes = self.host.nbytes
        self.device = id(self)
        FakeBuffer.live[self.device] = self

    def to_device(self, n_bytes: int, stream: Any) -> None:
        self.copied = n_bytes

    def to_host(self, n_bytes: int, stream: Any) -> None:
        return None

    def free(self) -> None:
        FakeBuffer.live.pop(self.device, None)
        FakeBuffer.freed.append(self.shape)


class FakeStream:
    address = 7

    def synchronize(self) -> None:
        return None

    def close(self) -> None:
        return None


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.addresses, self.shapes = engine, {}, []

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = FakeBuffer.live[address]

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes.append(tuple(shape))
        return True

    def execute_async_v3(self, stream: int) -> bool:
        rows = self.shapes[-1][0]
        x = self.addresses["images"].host[:rows].reshape(rows, -1).mean(axis=1)
        self.addresses["grade_logits"].host[:rows] = x[:, None] * np.arange(5)
        self.addresses["gradable_logit"].host[:rows] = 1.0
        return True


class FakeEngine:
    def __init__(self, batches: tuple[int, int], bad_dtype: str | None = None) -> None:
        self.batches, self.bad_dtype = batches, bad_dtype
        self.num_io_tensors = len(SHAPES)

    def get_tensor_name(self, i: int) -> str:
        return list(SHAPES)[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "images" else "OUTPUT"

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        low, high = self.batches
        return ((low, *SHAPES[name]), (high, *SHAPES[name]), (high, *SHAPES[name]))

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, *SHAPES[name])

    def get_tensor_dtype(self, name: str) -> str:
        if name == self.bad_dtype:
            raise TypeError(f"unsupported dtype for {name}")  # what pybind11 raises
        return "float32"

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


def fake_trt(engine: Any, version: str = "8.5.2.2") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: np.float32  # type: ignore[attr-defined]

    class Runtime:
        made: ClassVar[list[Runtime]] = []

        def __init__(self, logger: Any) -> None:
            self.DLA_core = -1
            self.core_at_deserialise: int | None = None
            Runtime.made.append(self)

        def deserialize_cuda_engine(self, plan: bytes) -> Any:
            self.core_at_deserialise = self.DLA_core
            if isinstance(engine, Exception):
                raise engine
            return engine

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


@pytest.fixture(autouse=True)
def _fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeBuffer.live.clear()
    FakeBuffer.freed.clear()
    monkeypatch.setattr(trt_run, "DeviceBuffer", FakeBuffer)
    monkeypatch.setattr(trt_run, "Stream", FakeStream)
    monkeypatch.setattr(trt_run, "cuda_context", contextlib.nullcontext)


def _x(n: int) -> np.ndarray:
    return np.arange(n * 48, dtype=np.float32).reshape(n, 3, 4, 4)


def test_a_dynamic_engine_runs_each_batch_at_its_own_size() -> None:
    runner = EngineRunner(fake_trt(FakeEngine((1, 8))), b"plan", "images")
    out = runner.run(_x(3))
    assert out["grade_logits"].shape == (3, 5) and out["grade_logits"].dtype == np.float32
    np.testing.assert_allclose(out["grade_logits"][:, 1], _x(3).reshape(3, -1).mean(axis=1))
    assert runner._context.shapes == [(3, 3, 4, 4)]
    with pytest.raises(EngineRunError, match=r"batch 9 outside the engine's 1\.\.8"):
        runner.run(_x(9))


def test_a_static_dla_engine_pads_and_gets_its_core_before_deserialising() -> None:
    trt = fake_trt(FakeEngine((8, 8)))
    runner = EngineRunner(trt, b"plan", "images", dla_core=1)
    assert trt.Runtime.made[-1].core_at_deserialise == 1  # type: ignore[attr-defined]
    out = runner.run(_x(3))
    assert runner._context.shapes == [(8, 3, 4, 4)] and out["grade_logits"].shape == (3, 5)
    assert not runner._buffers["images"].host[3:].any()  # padding rows are zeros


def test_an_engine_set_uses_the_smallest_engine_that_holds_the_batch() -> None:
    small = EngineRunner(fake_trt(FakeEngine((1, 1))), b"a", "images")
    large = EngineRunner(fake_trt(FakeEngine((8, 8))), b"b", "images")
    engines = EngineSet([large, small])
    engines.run(_x(1))
    engines.run(_x(5))
    engines.run(_x(11))  # chunks of the largest: 8 + 3 (padded to 8)
    assert small._context.shapes == [(1, 3, 4, 4)]
    assert large._context.shapes == [(8, 3, 4, 4)] * 3
    assert engines.run(_x(11))["grade_logits"].shape == (11, 5)


def test_tensorrt_84_is_refused_by_name() -> None:
    old = FakeEngine((1, 8))
    del old.num_io_tensors  # 8.4's engines had bindings, not named I/O tensors
    with pytest.raises(EngineRunError, match=r"TensorRT 8\.4\.3\.1 lacks num_io_tensors.*5\.1"):
        EngineRunner(fake_trt(old, "8.4.3.1"), b"plan", "images")


def test_a_failure_while_allocating_frees_what_was_allocated() -> None:
    with pytest.raises(TypeError, match="unsupported dtype"):
        EngineRunner(fake_trt(FakeEngine((1, 8), bad_dtype="gradable_logit")), b"p", "images")
    assert FakeBuffer.freed and not FakeBuffer.live  # images and grade_logits went back


def test_the_backend_turns_any_tensorrt_exception_into_backend_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"plan")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt(AttributeError("no attribute 'x'")))
    monkeypatch.setattr(trt_backend, "tensorrt_available", lambda: True)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda: GpuInfo("Xavier", 7, 2))
    spec = SimpleNamespace(dla_core=None)
    monkeypatch.setattr(trt_backend, "cached_engines", lambda *a, **k: [(spec, plan)])
    recipe = {"input": "images", "image_size": 4, "min_batch": 1, "opt_batch": 4,
              "max_batch": 8, "workspace_mb": 64, "dla_core": None, "steps": []}  # fmt: skip
    with pytest.raises(BackendError, match="AttributeError: no attribute 'x'"):
        trt_backend.TrtBackend(
            tmp_path, "fp16", image_size=4, recipe=recipe, cache_dir=tmp_path, bundle_digest="ab"
        )


@register_backend("broken-for-test")
class _Broken(Backend):
    def __init__(self, model_path: Path, precision: str, *, image_size: int, **_: Any) -> None:
        super().__init__(model_path, precision, image_size)

    def _run(self, images: np.ndarray) -> Outputs:
        raise TypeError("a library bug")


def test_precision_choice_survives_a_candidate_that_raises(tiny_export: Path) -> None:
    info = BundleInfo.from_export_dir(tiny_export)
    settings = SelectionSettings(batch=4, runs=1, min_seconds=0.0,
                                 backends=("onnxruntime", "broken-for-test"))  # fmt: skip
    selection = choose_precision(tiny_export, info, settings)
    broken = [m for m in selection.measurements if m.backend == "broken-for-test"]
    assert broken and all(m.status == "failed: TypeError: a library bug" for m in broken)
    assert selection.chosen is not None and selection.chosen.backend == "onnxruntime"
