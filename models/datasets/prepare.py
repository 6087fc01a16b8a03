"""Turn an index of records into training arrays: read, crop, resize, split by patient."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from models.datasets.arrays import FundusArrays
from models.datasets.public import BadImageError, FundusRecord, IndexCollector, OnError
from models.preprocess import PreprocessSpec


def read_image(record: FundusRecord, *, at_least: int | None = None) -> np.ndarray:
    """The record's image as uint8 (H, W, 3) RGB; :class:`BadImageError` names a bad file.

    With ``at_least``, a JPEG is decoded at the smallest of libjpeg's DCT scales (1/2, 1/4,
    1/8) that keeps both sides at ``at_least`` pixels or more: a 3000 x 2250 camera image
    wanted at 384 px decodes at 750 x 563, about six times faster than in full.
    """
    path = record.path
    if path.suffix.lower() == ".dcm":
        from models.datasets.dicom import read_dicom_image

        return read_dicom_image(path)
    if not path.is_file():
        raise BadImageError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            if at_least is not None and img.format == "JPEG":
                img.draft("RGB", (at_least, at_least))
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot decode image ({e})") from e


def materialise(
    records: Sequence[FundusRecord],
    spec: PreprocessSpec,
    *,
    on_error: OnError = "raise",
    site: str = "",
) -> tuple[FundusArrays, list[tuple[str, str]]]:
    """Read every record and bring it to ``spec``'s square (border cropped, resized).

    The site of each row is ``site``, or the record's layout name when ``site`` is empty.
    Returns the arrays and the (path, why) of every image skipped.
    """
    out = IndexCollector(on_error)
    images: list[np.ndarray] = []
    for record in records:
        try:
            square = spec.to_square(read_image(record))
        except BadImageError as e:
            out.fail(str(record.path), e)
            continue
        images.append(square)
        out.records.append(record)
    kept = out.records
    arrays = FundusArrays(
        images=np.stack(images) if images else np.zeros((0, spec.size, spec.size, 3), np.uint8),
        grade=np.array([r.grade for r in kept], dtype=np.int64),
        gradable=np.array([r.gradable for r in kept], dtype=np.bool_),
        site=np.array([site or r.layout for r in kept], dtype=np.str_),
        patient=np.array([r.patient for r in kept], dtype=np.str_),
    )
    return arrays, out.skipped


def split_by_patient(
    records: Sequence[FundusRecord], fractions: tuple[float, ...], seed: int
) -> list[list[FundusRecord]]:
    """Split records into ``len(fractions)`` parts by patient, deterministically for ``seed``.

    All images of one patient land in the same part; parts hold about ``fractions`` of the
    patients each and keep the input order of their records.
    """
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    patients = sorted({r.patient for r in records})
    order = np.random.default_rng(seed).permutation(len(patients))
    bounds = np.rint(np.cumsum(fractions) * len(patients)).astype(int)
    part_of: dict[str, int] = {}
    for rank, idx in enumerate(order):
        part_of[patients[idx]] = int(np.searchsorted(bounds, rank, side="right"))
    parts: list[list[FundusRecord]] = [[] for _ in fractions]
    for r in records:
        parts[min(part_of[r.patient], len(parts) - 1)].append(r)
    return parts
