"""CUDA buffers and streams, the TensorRT memory path: through cuda-python on a real GPU (where
one exists), and through pycuda's calls against a fake driver everywhere."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import edge_agent.runtime.cuda_buffers as cuda_buffers
from edge_agent.runtime.cuda_buffers import DeviceBuffer, Stream, gpu_info


def test_gpu_info_is_none_or_a_compute_capability() -> None:
    info = gpu_info()
    if info is not None:
        assert info.major >= 5 and info.sm == f"sm{info.major}{info.minor}"


@pytest.mark.gpu
def test_buffer_round_trip_through_the_device() -> None:
    info = gpu_info()
    assert info is not None, "a CUDA GPU was expected (the gpu marker found one through torch)"
    stream = Stream()
    buf = DeviceBuffer((4, 3, 8, 8), np.float32)
    try:
        data = np.random.default_rng(0).standard_normal(buf.shape).astype(np.float32)
        buf.host[:] = data
        buf.to_device(buf.nbytes, stream)
        buf.host[:] = 0
        buf.to_host(buf.nbytes // 2, stream)  # only the first half comes back
        stream.synchronize()
        half = data.size // 2
        np.testing.assert_array_equal(buf.host.reshape(-1)[:half], data.reshape(-1)[:half])
        assert not buf.host.reshape(-1)[half:].any()
    finally:
        buf.free()
        stream.close()


class _FakePycuda:
    """pycuda.driver's calls the buffers make, over host memory (no GPU here)."""

    def __init__(self) -> None:
        self.memory: dict[int, bytearray] = {}
        self.calls: list[str] = []
        fake = self

        class Context:
            @staticmethod
            def pop() -> None:
                fake.calls.append("pop")

        class Primary:
            def push(self) -> None:
                fake.calls.append("push")

        class Device:
            def __init__(self, i: int) -> None:
                self.i = i

            @staticmethod
            def count() -> int:
                return 1

            def name(self) -> str:
                return "Xavier"

            def compute_capability(self) -> tuple[int, int]:
                return (7, 2)

            def retain_primary_context(self) -> Primary:
                fake.calls.append("retain")
                return Primary()

        class Stream:
            handle = 1234

            def synchronize(self) -> None:
                fake.calls.append("sync")

        class Allocation:
            def __init__(self, n: int) -> None:
                self.address = 0x1000 + len(fake.memory) * 0x10000
                fake.memory[self.address] = bytearray(n)

            def __int__(self) -> int:
                return self.address

            def free(self) -> None:
                del fake.memory[self.address]

        self.Context, self.Device, self.Stream = Context, Device, Stream
        self.mem_alloc = Allocation
        self.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)

    def init(self) -> None:
        self.calls.append("init")

    def memcpy_htod_async(self, dest: int, src: np.ndarray, stream: object) -> None:
        self.memory[dest][: src.nbytes] = src.tobytes()

    def memcpy_dtoh_async(self, dest: np.ndarray, src: int, stream: object) -> None:
        dest[:] = np.frombuffer(bytes(self.memory[src][: dest.nbytes]), dest.dtype)


@pytest.fixture
def pycuda(monkeypatch: pytest.MonkeyPatch) -> _FakePycuda:
    fake = _FakePycuda()
    package = types.ModuleType("pycuda")
    package.driver = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", fake)  # type: ignore[arg-type]
    monkeypatch.setenv(cuda_buffers.LIBRARY_ENV, "pycuda")
    monkeypatch.setattr(cuda_buffers, "_state", {})
    return fake


def test_pycuda_buffers_round_trip_on_the_primary_context(pycuda: _FakePycuda) -> None:
    assert cuda_buffers.library() == "pycuda"
    assert gpu_info() == cuda_buffers.GpuInfo("Xavier", 7, 2)
    with cuda_buffers.cuda_context():
        stream = Stream()
        buf = DeviceBuffer((4, 3), np.float32)
        data = np.arange(12, dtype=np.float32).reshape(4, 3)
        buf.host[:] = data
        buf.to_device(buf.nbytes, stream)
        buf.host[:] = 0
        buf.to_host(buf.nbytes // 2, stream)  # only the first two rows come back
        stream.synchronize()
    np.testing.assert_array_equal(buf.host[:2], data[:2])
    assert not buf.host[2:].any() and stream.address == 1234
    buf.free()
    buf.free()  # idempotent
    assert not pycuda.memory
    assert pycuda.calls.count("retain") == 1 and pycuda.calls[-2:] == ["sync", "pop"]


def test_the_library_choice_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_buffers, "_state", {})
    monkeypatch.setenv(cuda_buffers.LIBRARY_ENV, "cupy")
    with pytest.raises(cuda_buffers.CudaError, match="expected one of"):
        cuda_buffers.library()
    monkeypatch.setenv(cuda_buffers.LIBRARY_ENV, "pycuda")
    monkeypatch.setitem(sys.modules, "pycuda", None)  # type: ignore[arg-type]
    with pytest.raises(cuda_buffers.CudaError, match="no CUDA library: install pycuda"):
        cuda_buffers.library()
    assert gpu_info() is None
