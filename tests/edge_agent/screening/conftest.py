"""Fixtures for the screening tests: DICOM Part 10 files written with pydicom."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

OPHTHALMIC_PHOTOGRAPHY_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _dicom_bytes(
    pixels: np.ndarray | None,
    *,
    sop_class: str = OPHTHALMIC_PHOTOGRAPHY_8BIT,
    rows_cols: tuple[int, int] | None = None,
) -> bytes:
    """An Ophthalmic Photography file (RGB, or MONOCHROME2 for 2-D ``pixels``) as bytes.

    ``pixels=None`` leaves out PixelData; ``rows_cols`` overrides the declared size.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OP"
    ds.PatientID = "test-patient"
    ds.ImageLaterality = "R"
    shape = pixels.shape if pixels is not None else (64, 64, 3)
    ds.Rows, ds.Columns = rows_cols or shape[:2]
    colour = len(shape) == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    bits = 8 if pixels is None else pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="session")
def dicom_bytes() -> Callable[..., bytes]:
    """A function writing DICOM bytes: ``(pixels | None, *, sop_class, rows_cols) -> bytes``."""
    return _dicom_bytes
