"""Property: whatever bytes arrive, decode_image returns an RGB array or raises ImageError."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edge_agent.screening import DecodeLimits, ImageError, decode_image

_LIMITS = DecodeLimits(max_bytes=1 << 20, max_pixels=1 << 20)
_RNG = np.random.default_rng(0)
_PICTURE = _RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_PICTURE).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeds(dicom_bytes: Callable[..., bytes]) -> list[bytes]:
    """Valid PNG, JPEG and DICOM files to mutate."""
    return [_encoded("PNG"), _encoded("JPEG"), dicom_bytes(_PICTURE)]


_MAGIC = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\0" * 128 + b"DICM"]
_TYPES = [None, "image/png", "image/jpeg", "application/dicom", "application/octet-stream"]


def _check(data: bytes, content_type: str | None) -> None:
    try:
        out = decode_image(data, content_type, _LIMITS)
    except ImageError as e:
        assert e.status in (400, 413, 415) and str(e)
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_MAGIC), st.binary(max_size=2048), st.sampled_from(_TYPES))
def test_arbitrary_bytes_only_raise_image_error(
    magic: bytes, body: bytes, content_type: str | None
) -> None:
    _check(magic + body, content_type)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
    st.sampled_from(_TYPES),
)
def test_mutated_valid_files_only_raise_image_error(
    seeds: list[bytes], seed: int, edits: list[tuple[int, int]], cut: int, content_type: str | None
) -> None:
    data = bytearray(seeds[seed])
    for pos, value in edits:
        data[pos % len(data)] = value
    _check(bytes(data[: max(1, len(data) - cut)]), content_type)
