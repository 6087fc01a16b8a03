"""Decoding uploads: JPEG, PNG and DICOM, and every kind of bad upload as a clear 4xx."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from edge_agent.screening import DecodeLimits, ImageError, decode_image
from models.synth import SITES, generate

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def fundus() -> np.ndarray:
    return generate(SITES["site-a"], 1, size=96, seed=4).images[0]


def _encode(image: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and carries one tiny compressed row: a bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * min(width, 1000)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _raises(data: bytes, content_type: str | None, status: int, match: str, **kw: object) -> None:
    with pytest.raises(ImageError, match=match) as info:
        decode_image(data, content_type, **kw)  # type: ignore[arg-type]
    assert info.value.status == status


def test_png_round_trips_exactly(fundus: np.ndarray) -> None:
    out = decode_image(_encode(fundus, "PNG"), "image/png")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, fundus)


def test_jpeg_decodes_close_to_the_original(fundus: np.ndarray) -> None:
    out = decode_image(_encode(fundus, "JPEG", quality=95), "image/jpeg; charset=binary")
    assert out.shape == fundus.shape
    assert np.abs(out.astype(int) - fundus).mean() < 3


def test_format_is_sniffed_without_a_content_type(
    fundus: np.ndarray, dicom_bytes: Callable[..., bytes]
) -> None:
    for data in (_encode(fundus, "PNG"), dicom_bytes(fundus)):
        assert decode_image(data, None).shape == fundus.shape
        assert decode_image(data, "application/octet-stream").shape == fundus.shape


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_other_png_modes_become_rgb(fundus: np.ndarray, mode: str) -> None:
    if mode == "I;16":
        img = Image.fromarray(fundus[..., 0].astype(np.uint16) * 257)
    else:
        img = Image.fromarray(fundus).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = decode_image(buf.getvalue(), "image/png")
    assert out.shape == fundus.shape and out.dtype == np.uint8
    if mode in ("L", "I;16"):
        grey = np.asarray(img.convert("L")) if mode == "L" else fundus[..., 0]
        np.testing.assert_array_equal(out[..., 1], grey)


def test_dicom_rgb_ophthalmic_photography_round_trips(
    fundus: np.ndarray, dicom_bytes: Callable[..., bytes]
) -> None:
    np.testing.assert_array_equal(decode_image(dicom_bytes(fundus), "application/dicom"), fundus)


def test_dicom_monochrome_is_stacked_to_rgb(
    fundus: np.ndarray, dicom_bytes: Callable[..., bytes]
) -> None:
    out = decode_image(dicom_bytes(fundus[..., 1]), "application/dicom")
    assert out.shape == fundus.shape
    np.testing.assert_array_equal(out[..., 2], fundus[..., 1])


def test_dicom_16_bit_is_scaled_by_bits_stored(
    fundus: np.ndarray, dicom_bytes: Callable[..., bytes]
) -> None:
    out = decode_image(dicom_bytes(fundus[..., 0].astype(np.uint16) * 257), None)
    np.testing.assert_array_equal(out[..., 0], fundus[..., 0])


def test_dicom_without_pixel_data(dicom_bytes: Callable[..., bytes]) -> None:
    _raises(dicom_bytes(None), "application/dicom", 400, "no pixel data")


def test_dicom_of_another_kind_is_unsupported(
    fundus: np.ndarray, dicom_bytes: Callable[..., bytes]
) -> None:
    _raises(dicom_bytes(fundus, sop_class=CT_IMAGE), None, 415, "not a photograph")


def test_dicom_declaring_a_huge_image_is_refused_before_decoding(
    fundus: np.ndarray, dicom_bytes: Callable[..., bytes]
) -> None:
    _raises(dicom_bytes(fundus, rows_cols=(60000, 60000)), None, 413, "exceeds the limit")


def test_dicom_with_short_pixel_data(
    fundus: np.ndarray,
    dicom_bytes: Callable[..., bytes],
) -> None:
    data = dicom_bytes(fundus, rows_cols=(200, 200))
    _raises(data, "application/dicom", 400, "DICOM pixel data")


def test_empty_upload() -> None:
    _raises(b"", "image/png", 400, "empty upload")


def test_upload_over_the_byte_limit(fundus: np.ndarray) -> None:
    data = _encode(fundus, "PNG")
    _raises(data, "image/png", 413, "exceeds the limit", limits=DecodeLimits(max_bytes=100))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images(fundus: np.ndarray, fmt: str) -> None:
    data = _encode(fundus, fmt)
    _raises(data[: len(data) // 2], None, 400, f"cannot decode the {fmt}")


def test_corrupt_png_body(fundus: np.ndarray) -> None:
    data = bytearray(_encode(fundus, "PNG"))
    data[60:200] = bytes(140)
    _raises(bytes(data), "image/png", 400, "cannot decode the PNG")


def test_image_over_the_pixel_limit(fundus: np.ndarray) -> None:
    _raises(
        _encode(fundus, "PNG"), None, 413, "exceeds the limit", limits=DecodeLimits(max_pixels=100)
    )


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _png_header_only(100_000, 100_000)
    assert len(bomb) < 1000
    _raises(bomb, "image/png", 413, "decompression bomb")
    _raises(_png_header_only(7000, 7000), "image/png", 413, "exceeds the limit")


@pytest.mark.parametrize(
    ("content_type", "data", "status", "match"),
    [
        ("text/plain", b"hello", 415, "unsupported content type 'text/plain'"),
        ("image/png", b"\xff\xd8\xff" + b"x" * 64, 415, "is a JPEG"),
        (None, b"GIF89a" + b"\0" * 64, 415, "unrecognised image format"),
        ("image/png", b"not an image at all", 400, "unrecognised image format"),
    ],
)
def test_wrong_content_types(
    content_type: str | None, data: bytes, status: int, match: str
) -> None:
    _raises(data, content_type, status, match)
