"""One uploaded photograph made ready for the model: decoded at the scale the model and the
quality gate need, checked by the gate and cropped to the model's square."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_agent.screening.decode import (
    DEFAULT_LIMITS,
    Decoded,
    DecodeLimits,
    ImageError,
    decode_upload,
    decoded_size,
)
from edge_agent.screening.quality import DEFAULT_CHECKS, FundusCheckSettings, fundus_checks
from models import PreprocessSpec


@dataclass(frozen=True)
class PreparedImage:
    """What the model and the case record need from one upload.

    ``square`` is the model's input (uint8 S x S x C, the spec's channels), ``checks`` the
    quality gate's reasons (empty: none failed); ``declared`` the file's own size and
    ``decoded`` the size it was decoded at (width, height; smaller after a DCT-scaled decode).
    """

    square: np.ndarray
    checks: list[str]
    declared: tuple[int, int]
    decoded: tuple[int, int]


DECODE_COPIES = 4
"""Copies of the decoded RGB pixels held at once while an upload is prepared (Pillow's image at
four bytes a pixel, its array, and the padded square before the resize), for the memory
reserved."""


class MemoryReserve(Protocol):
    """Where the bytes of a decode are reserved (``edge_agent.service.MemoryBudget``)."""

    limit: int

    def try_reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes; False when they do not fit now."""
        ...

    def release(self, size: int) -> None:
        """Give back ``size`` bytes."""
        ...


def decode_side(spec: PreprocessSpec, checks: FundusCheckSettings = DEFAULT_CHECKS) -> int:
    """The smallest side a decoded photograph may have: the model's input size (the circular
    field spans about the sensor's height, and the fundus crop keeps the field) and the quality
    gate's working size (it measures every image resampled to that longest side, so anything
    at least that large is measured alike)."""
    return max(spec.size, checks.work_size)


def prepare_image(
    data: bytes,
    content_type: str | None,
    spec: PreprocessSpec,
    checks: FundusCheckSettings = DEFAULT_CHECKS,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    reduce: bool = True,
    memory: MemoryReserve | None = None,
) -> PreparedImage:
    """Decode ``data`` (JPEG, PNG or DICOM), run the quality gate's image checks and crop to
    the model's square.

    With ``reduce`` a JPEG is decoded at the smallest DCT scale that keeps both sides >=
    :func:`decode_side`; should the fundus field still come out smaller than the model's input
    (a small field on a large sensor), it is decoded again at the scale that covers it.
    ``reduce=False`` always decodes in full. With ``memory``, the bytes the decode will hold
    (read from the file's header) are reserved there first: ``ImageError`` 413 when they exceed
    the whole budget, 503 while other decodes hold it. Raises ``ImageError`` for a bad upload.
    """
    side = decode_side(spec, checks) if reduce else None
    if memory is None:
        return _prepare(data, content_type, spec, checks, limits, side)
    need = decoded_size(data, content_type, limits, min_side=side) * DECODE_COPIES
    if need > memory.limit:
        raise ImageError(
            f"decoding this image takes about {need >> 20} MiB, more than the "
            f"{memory.limit >> 20} MiB this device allows for decoding; send a smaller image",
            413,
        )
    if not memory.try_reserve(need):
        raise ImageError("the device is decoding other images at its memory limit; retry", 503)
    try:
        return _prepare(data, content_type, spec, checks, limits, side)
    finally:
        memory.release(need)


def _prepare(
    data: bytes,
    content_type: str | None,
    spec: PreprocessSpec,
    checks: FundusCheckSettings,
    limits: DecodeLimits,
    side: int | None,
) -> PreparedImage:
    decoded: Decoded = decode_upload(data, content_type, limits, min_side=side)
    if decoded.scale > 1:
        field = spec.field_side(decoded.pixels)
        if field < spec.size:  # the short side that makes the field the model's size
            wider = -(-min(decoded.pixels.shape[:2]) * spec.size // max(field, 1))
            decoded = decode_upload(data, content_type, limits, min_side=wider)
    image = decoded.pixels
    return PreparedImage(
        square=spec.to_square(image),
        checks=fundus_checks(image, checks),
        declared=decoded.declared,
        decoded=(image.shape[1], image.shape[0]),
    )


__all__ = ["DECODE_COPIES", "MemoryReserve", "PreparedImage", "decode_side", "prepare_image"]
