"""cuda-python buffers and streams, the TensorRT backend's memory path (needs a CUDA GPU)."""

import numpy as np
import pytest

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
        buf.to_device(buf.nbytes, stream.handle)
        buf.host[:] = 0
        buf.to_host(buf.nbytes // 2, stream.handle)  # only the first half comes back
        stream.synchronize()
        half = data.size // 2
        np.testing.assert_array_equal(buf.host.reshape(-1)[:half], data.reshape(-1)[:half])
        assert not buf.host.reshape(-1)[half:].any()
    finally:
        buf.free()
        stream.close()
