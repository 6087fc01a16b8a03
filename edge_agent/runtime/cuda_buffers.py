"""CUDA memory and streams through cuda-python (``cuda.bindings.runtime``), imported lazily."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np


class CudaError(RuntimeError):
    """A CUDA runtime call failed or cuda-python is missing; the message names the call."""


def cudart() -> Any:
    """The cuda-python runtime (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise CudaError(
                "cuda-python is not installed: `pip install cuda-python` matching the CUDA driver"
            ) from None
    return runtime


def check(result: Any, call: str) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` result, raising :class:`CudaError` on failure."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        raise CudaError(
            f"{call} failed: {err} ({text.decode() if isinstance(text, bytes) else text})"
        )
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    """The GPU engines are built for: its name and compute capability."""

    name: str
    major: int
    minor: int

    @property
    def sm(self) -> str:
        """``sm72`` for a Xavier, ``sm90`` for an H100."""
        return f"sm{self.major}{self.minor}"


def gpu_info(device: int = 0) -> GpuInfo | None:
    """Name and compute capability of ``device``, or None where no GPU or cuda-python."""
    try:
        rt = cudart()
        count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count or device >= count:
            return None
        prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    except CudaError:
        return None  # includes cudaErrorInsufficientDriver on machines without a GPU
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.strip(), int(prop.major), int(prop.minor))


class DeviceBuffer:
    """``nbytes`` of device memory with a pinned host mirror viewed as a numpy array."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        rt = cudart()
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.device = int(check(rt.cudaMalloc(self.nbytes), "cudaMalloc"))
        try:
            self._host_ptr = int(check(rt.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        except CudaError:
            check(rt.cudaFree(self.device), "cudaFree")
            raise
        raw = (ctypes.c_byte * self.nbytes).from_address(self._host_ptr)
        self.host: np.ndarray = np.frombuffer(memoryview(raw), dtype=self.dtype).reshape(shape)

    def to_device(self, n_bytes: int, stream: Any) -> None:
        """Copy the first ``n_bytes`` of the host mirror to the device (async on ``stream``)."""
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(rt.cudaMemcpyAsync(self.device, self._host_ptr, n_bytes, kind, stream), "H2D copy")

    def to_host(self, n_bytes: int, stream: Any) -> None:
        """Copy the first ``n_bytes`` from the device into the host mirror (async)."""
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpyAsync(self._host_ptr, self.device, n_bytes, kind, stream), "D2H copy")

    def free(self) -> None:
        """Release both allocations (idempotent)."""
        if self.device:
            rt = cudart()
            rt.cudaFree(self.device)
            rt.cudaFreeHost(self._host_ptr)
            self.device = 0


class Stream:
    """A CUDA stream (created on construction, destroyed by :meth:`close`)."""

    def __init__(self) -> None:
        self.handle = check(cudart().cudaStreamCreate(), "cudaStreamCreate")

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        """Destroy the stream (idempotent)."""
        if self.handle is not None:
            cudart().cudaStreamDestroy(self.handle)
            self.handle = None
