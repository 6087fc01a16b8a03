"""CUDA memory, streams and the GPU's name through pycuda or cuda-python, imported lazily.

JetPack's TensorRT samples and the design card use pycuda; cuda-python 11.8.x (pinned: newer
bindings need a driver JetPack 5 lacks) is the alternative. ``FOVEA_CUDA_LIBRARY`` (``pycuda`` or
``cuda-python``) picks one; unset, cuda-python when it imports, else pycuda. Both work on the
device's primary context, the one TensorRT and the CUDA runtime use; pycuda needs it made
current on the calling thread (:func:`cuda_context`).

Loaded by the inference worker under JetPack 5's Python 3.8: numpy and the standard library only
at the top (``make lint`` checks it as 3.8).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

LIBRARY_ENV = "FOVEA_CUDA_LIBRARY"
LIBRARIES = ("cuda-python", "pycuda")


_state: dict[str, Any] = {}
"""The library found (per ``FOVEA_CUDA_LIBRARY`` value) and pycuda's primary context."""


class CudaError(RuntimeError):
    """A CUDA call failed or no CUDA library is installed; the message names the call."""


def library() -> str:
    """The buffer library in use: ``FOVEA_CUDA_LIBRARY``, else the first of cuda-python and
    pycuda that imports; CudaError when neither does."""
    wanted = os.environ.get(LIBRARY_ENV, "")
    if wanted and wanted not in LIBRARIES:
        raise CudaError(f"{LIBRARY_ENV}={wanted!r}: expected one of {LIBRARIES}")
    found = _state.get(f"library:{wanted}")  # asked per batch: a failed import costs a scan
    if found is not None:
        return str(found)
    for name in (wanted,) if wanted else LIBRARIES:
        try:
            cudart() if name == "cuda-python" else _pycuda()
        except CudaError:
            continue
        _state[f"library:{wanted}"] = name
        return name
    raise CudaError(
        "no CUDA library: install pycuda, or cuda-python matching the driver (11.8.x on "
        f"JetPack 5){f' ({LIBRARY_ENV}={wanted})' if wanted else ''}"
    )


def cudart() -> Any:
    """The cuda-python runtime (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise CudaError("cuda-python is not installed") from None
    return runtime


def _pycuda() -> Any:
    try:
        import pycuda.driver as driver
    except ImportError:
        raise CudaError("pycuda is not installed") from None
    return driver


def _pycuda_context() -> Any:
    """pycuda's handle on device 0's primary context (retained once per process)."""
    if "context" not in _state:
        driver = _pycuda()
        driver.init()
        _state["context"] = driver.Device(0).retain_primary_context()
    return _state["context"]


@contextlib.contextmanager
def cuda_context() -> Iterator[None]:
    """Make the primary context current on this thread for the block (pycuda; the runtime API
    of cuda-python does that by itself)."""
    if library() != "pycuda":
        yield
        return
    _pycuda_context().push()
    try:
        yield
    finally:
        _pycuda().Context.pop()


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
    """Name and compute capability of ``device``, or None where no GPU or CUDA library."""
    try:
        if library() == "pycuda":
            driver = _pycuda()
            driver.init()
            if device >= driver.Device.count():
                return None
            dev = driver.Device(device)
            major, minor = dev.compute_capability()
            return GpuInfo(str(dev.name()).strip(), int(major), int(minor))
        rt = cudart()
        count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count or device >= count:
            return None
        prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    except CudaError:
        return None  # includes cudaErrorInsufficientDriver on machines without a GPU
    except Exception:  # pycuda raises its own errors (no device, no driver for this user)
        return None
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.strip(), int(prop.major), int(prop.minor))


class Stream:
    """A CUDA stream: ``address`` is what TensorRT's ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self.pycuda = library() == "pycuda"
        if self.pycuda:
            self.native: Any = _pycuda().Stream()
            self.address = int(self.native.handle)
        else:
            self.native = check(cudart().cudaStreamCreate(), "cudaStreamCreate")
            self.address = int(self.native)

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        if self.pycuda:
            self.native.synchronize()
        else:
            check(cudart().cudaStreamSynchronize(self.native), "cudaStreamSynchronize")

    def close(self) -> None:
        """Destroy the stream (idempotent; pycuda's goes with its last reference)."""
        if self.native is not None and not self.pycuda:
            cudart().cudaStreamDestroy(self.native)
        self.native = None


class DeviceBuffer:
    """``nbytes`` of device memory with a pinned host mirror viewed as a numpy array."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.pycuda = library() == "pycuda"
        if self.pycuda:
            driver = _pycuda()
            self.host: np.ndarray = driver.pagelocked_empty(shape, self.dtype)
            self._allocation = driver.mem_alloc(max(self.nbytes, 1))
            self.device = int(self._allocation)
            return
        rt = cudart()
        self.device = int(check(rt.cudaMalloc(self.nbytes), "cudaMalloc"))
        try:
            self._host_ptr = int(check(rt.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        except CudaError:
            check(rt.cudaFree(self.device), "cudaFree")
            raise
        raw = (ctypes.c_byte * self.nbytes).from_address(self._host_ptr)
        self.host = np.frombuffer(memoryview(raw), dtype=self.dtype).reshape(shape)

    def _bytes(self, n_bytes: int) -> np.ndarray:
        return self.host.reshape(-1).view(np.uint8)[:n_bytes]

    def to_device(self, n_bytes: int, stream: Stream) -> None:
        """Copy the first ``n_bytes`` of the host mirror to the device (async on ``stream``)."""
        if self.pycuda:
            _pycuda().memcpy_htod_async(self.device, self._bytes(n_bytes), stream.native)
            return
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        copy = rt.cudaMemcpyAsync(self.device, self._host_ptr, n_bytes, kind, stream.native)
        check(copy, "H2D copy")

    def to_host(self, n_bytes: int, stream: Stream) -> None:
        """Copy the first ``n_bytes`` from the device into the host mirror (async)."""
        if self.pycuda:
            _pycuda().memcpy_dtoh_async(self._bytes(n_bytes), self.device, stream.native)
            return
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        copy = rt.cudaMemcpyAsync(self._host_ptr, self.device, n_bytes, kind, stream.native)
        check(copy, "D2H copy")

    def free(self) -> None:
        """Release both allocations (idempotent)."""
        if not self.device:
            return
        if self.pycuda:
            self._allocation.free()
        else:
            rt = cudart()
            rt.cudaFree(self.device)
            rt.cudaFreeHost(self._host_ptr)
        self.device = 0
