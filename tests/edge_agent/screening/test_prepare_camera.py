"""Camera-size JPEGs: decoded at the DCT scale the model and the quality gate need, with the
same screening results as a full decode; limits, EXIF, PNG and DICOM as before."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from edge_agent.screening import (
    DECODE_COPIES,
    DEFAULT_CHECKS,
    DecodeLimits,
    ImageError,
    decode_side,
    decode_upload,
    decoded_size,
    eye_result,
    prepare_image,
)
from models import PreprocessSpec
from models.synth import CameraOptions, camera_jpeg, generate, get_site


def _camera(seed: int = 0, **options: object) -> bytes:
    square = generate(get_site("site-a"), 1, size=128, seed=seed).images[0]
    return camera_jpeg(square, np.random.default_rng(seed), CameraOptions(**options))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def camera() -> bytes:
    """One 3000 x 2250 camera JPEG."""
    return _camera()


@pytest.mark.parametrize(("size", "scale", "decoded"), [(64, 8, (375, 282)), (384, 4, (750, 563))])
def test_the_smallest_dct_scale_that_covers_the_model_is_chosen(
    camera: bytes, size: int, scale: int, decoded: tuple[int, int]
) -> None:
    spec = PreprocessSpec(size=size)
    side = decode_side(spec, DEFAULT_CHECKS)
    assert side == max(size, DEFAULT_CHECKS.work_size)
    out = decode_upload(camera, "image/jpeg", min_side=side)
    assert out.declared == (3000, 2250) and out.scale == scale
    assert (out.pixels.shape[1], out.pixels.shape[0]) == decoded
    box = spec.fundus_box(out.pixels)
    assert box is not None and min(box[1] - box[0], box[3] - box[2]) >= size  # field covers it
    ready = prepare_image(camera, "image/jpeg", spec)
    assert ready.decoded == decoded and ready.square.shape == (size, size, 3)


def test_a_small_field_is_decoded_again_at_a_scale_that_covers_it() -> None:
    data = _camera(field=0.3)  # a 675-px field on the 3000 x 2250 sensor
    spec = PreprocessSpec(size=384)
    first = decode_upload(data, "image/jpeg", min_side=decode_side(spec))
    assert first.scale == 4  # where the field would be only ~169 px across
    ready = prepare_image(data, "image/jpeg", spec)
    assert ready.decoded[0] > first.pixels.shape[1]
    box = spec.fundus_box(np.asarray(Image.open(io.BytesIO(data)).reduce(3000 // ready.decoded[0])))
    assert box is not None and box[1] - box[0] >= 384


def _screen(square: np.ndarray, checks: list[str], spec: PreprocessSpec) -> tuple[object, ...]:
    """A fixed random linear "model" of the input tensor: grade, referral and quality."""
    x = spec.normalise(square[None]).ravel()
    weights = np.random.default_rng(7).standard_normal((6, x.size)).astype(np.float32)
    out = weights @ x / np.sqrt(x.size)
    result = eye_result(out[:5] * 4, out[5:] + 3, checks, referral_threshold=0.4)
    return result.grade, result.referable, result.quality.passed


def test_reduced_and_full_decodes_screen_alike() -> None:
    spec = PreprocessSpec(size=64)
    for seed in range(4):
        data = _camera(seed)
        reduced = prepare_image(data, "image/jpeg", spec)
        full = prepare_image(data, "image/jpeg", spec, reduce=False)
        assert full.decoded == (3000, 2250) and reduced.decoded == (375, 282)
        diff = np.abs(reduced.square.astype(int) - full.square.astype(int))
        assert diff.mean() < 2.0, seed
        assert reduced.checks == full.checks
        assert _screen(reduced.square, reduced.checks, spec) == _screen(
            full.square, full.checks, spec
        )


def test_the_pixel_limit_reads_the_declared_size_not_the_reduced_one(camera: bytes) -> None:
    with pytest.raises(ImageError, match="3000 x 2250 pixels exceeds") as info:
        decode_upload(camera, "image/jpeg", DecodeLimits(max_pixels=1_000_000), min_side=64)
    assert info.value.status == 413


def test_exif_orientation_still_applies_after_a_scaled_decode(camera: bytes) -> None:
    img = Image.open(io.BytesIO(camera))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    out = decode_upload(buf.getvalue(), "image/jpeg", min_side=128)
    assert out.scale == 8 and out.pixels.shape[:2] == (375, 282)


def test_png_and_dicom_are_decoded_in_full(dicom_bytes: Callable[..., bytes]) -> None:
    image = generate(get_site("site-a"), 1, size=300, seed=1).images[0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    png = decode_upload(buf.getvalue(), "image/png", min_side=64)
    assert png.scale == 1 and png.pixels.shape == (300, 300, 3)
    np.testing.assert_array_equal(png.pixels, image)
    ready = prepare_image(dicom_bytes(image), "application/dicom", PreprocessSpec(size=64))
    assert ready.decoded == (300, 300) and ready.square.shape == (64, 64, 3)


def test_a_decode_reserves_its_memory_first_and_gives_it_back(camera: bytes) -> None:
    from edge_agent.service.memory import MemoryBudget

    spec = PreprocessSpec(size=64)
    reduced = decoded_size(camera, "image/jpeg", min_side=decode_side(spec))
    full = decoded_size(camera, "image/jpeg")
    assert (reduced, full) == (375 * 282 * 3, 3000 * 2250 * 3)  # from the header alone
    budget = MemoryBudget(reduced * DECODE_COPIES)
    prepare_image(camera, "image/jpeg", spec, memory=budget)
    assert budget.used == 0
    with pytest.raises(ImageError) as too_big:  # a full decode needs more than the budget
        prepare_image(camera, "image/jpeg", spec, reduce=False, memory=budget)
    assert too_big.value.status == 413 and "MiB" in str(too_big.value)
    assert budget.try_reserve(1)
    with pytest.raises(ImageError) as busy:  # others hold part of it: retry later
        prepare_image(camera, "image/jpeg", spec, memory=budget)
    assert busy.value.status == 503 and budget.used == 1
