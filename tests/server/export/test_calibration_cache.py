"""TensorRT calibration cache: header, big-endian float32 scales, ranges = scale x 127."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from server.export.calibration_cache import read_cache, scale_hex, trt_header, write_ranges


def test_header_for_jetpack_51() -> None:
    assert trt_header("8.5.2") == "TRT-8502-EntropyCalibration2"
    assert trt_header("8.6.1.6") == "TRT-8601-EntropyCalibration2"
    # from 10 on the version number is major*10000 + minor*100 + patch
    assert trt_header("10.3.0") == "TRT-100300-EntropyCalibration2"
    assert trt_header("10.14.1") == "TRT-101401-EntropyCalibration2"
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR\.PATCH"):
        trt_header("8.5")


def test_scale_is_big_endian_float32_hex() -> None:
    assert scale_hex(1.0) == "3f800000"
    assert scale_hex(0.5) == "3f000000"
    assert struct.unpack(">f", bytes.fromhex(scale_hex(0.0123)))[0] == pytest.approx(0.0123)


def test_written_cache_round_trips(tmp_path: Path) -> None:
    scales = {"images": 2.0 / 127, "/model/stem/Relu_output_0": 0.05}
    write_ranges(scales, tmp_path / "r.json", tmp_path / "c.cache")
    header, back = read_cache(tmp_path / "c.cache")
    assert header == "TRT-8502-EntropyCalibration2"
    assert back == pytest.approx(scales)
    ranges = json.loads((tmp_path / "r.json").read_text())["tensors"]
    assert ranges["images"]["range"] == pytest.approx(2.0)
