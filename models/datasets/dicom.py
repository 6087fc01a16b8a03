"""Index and read fundus photographs stored as DICOM files (Ophthalmic Photography and others)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.datasets.arrays import UNKNOWN_GRADE
from models.datasets.public import (
    BadImageError,
    DatasetLayoutError,
    FundusRecord,
    IndexCollector,
    LoadedIndex,
    OnError,
    parse_flag,
    parse_grade,
    read_label_rows,
)

OPHTHALMIC_PHOTOGRAPHY_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
_EYES = {"L": "left", "R": "right"}
_YBR = ("YBR_FULL", "YBR_FULL_422")


def _read(path: Path, *, pixels: bool) -> Any:
    """The parsed DICOM dataset, or :class:`BadImageError` naming a missing or non-DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise BadImageError(f"{path}: DICOM file not found")
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise BadImageError(f"{path}: not a readable DICOM file ({e})") from e


def _to_uint8(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    """Scale pixel values to 0-255: by the stored bit depth, or min-max for signed/float data."""
    if arr.dtype == np.uint8:
        return arr
    values = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        top = float(2 ** max(bits_stored, 1) - 1)
        values = values / top * 255.0
    else:
        low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        values = (values - low) / (high - low or 1.0) * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _decoded_pixels(ds: Any, path: Path) -> np.ndarray:
    """The first frame's pixels as stored (no colour conversion by pydicom)."""
    if "PixelData" not in ds:
        raise BadImageError(f"{path}: DICOM file has no pixel data")
    if hasattr(ds, "pixel_array_options"):  # pydicom >= 3 converts YBR itself unless told not to
        ds.pixel_array_options(as_rgb=False)
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:  # decoders raise many types (missing plugin, truncated data, ...)
        raise BadImageError(f"{path}: cannot decode DICOM pixel data ({e})") from e
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr[0] if frames > 1 else arr


def read_dicom_image(path: Path) -> np.ndarray:
    """A DICOM image as uint8 (H, W, 3) RGB; :class:`BadImageError` names a bad file.

    Handles RGB, YBR_FULL/YBR_FULL_422, MONOCHROME1/2 (stacked to three channels) and
    more-than-8-bit data (scaled by the stored bit depth).
    """
    try:
        from pydicom.pixels import convert_color_space
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import convert_color_space  # type: ignore[no-redef]

    path = Path(path)
    ds = _read(path, pixels=True)
    arr = _decoded_pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric in _YBR:
        arr = convert_color_space(arr, photometric, "RGB")
    arr = _to_uint8(arr, bits)
    if arr.ndim == 2:
        if photometric == "MONOCHROME1":
            arr = 255 - arr
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise BadImageError(
            f"{path}: unsupported pixel layout {arr.shape} ({photometric or 'no photometric'})"
        )
    return np.ascontiguousarray(arr)


def _labels(root: Path, collector: IndexCollector) -> dict[str, tuple[int, bool]]:
    """{file name: (grade, gradable)} from ``root/labels.csv`` (file,grade[,gradable])."""
    path = root / "labels.csv"
    if not path.is_file():
        return {}
    out: dict[str, tuple[int, bool]] = {}
    for line, row in read_label_rows(path, ("file", "grade")):
        try:
            gradable = (
                parse_flag(row["gradable"], path, line, "gradable") if row.get("gradable") else True
            )
            grade = parse_grade(row["grade"], path, line, "grade") if gradable else UNKNOWN_GRADE
            if row["file"] in out:
                raise DatasetLayoutError(f"{path}: row {line}: file {row['file']!r} listed twice")
        except ValueError as e:
            collector.fail(f"{path}:{line}", e)
            continue
        out[row["file"]] = (grade, gradable)
    return out


def load_dicom(root: Path, *, on_error: OnError = "raise") -> LoadedIndex:
    """Every ``*.dcm`` under root, labelled from an optional ``labels.csv`` (else grade -1).

    Patient comes from PatientID (the file stem when empty), eye from ImageLaterality or
    Laterality. ``labels.csv`` names files by path below root (or by file name); a listed file
    that does not exist is reported like a missing image.
    """
    root = Path(root)
    out = IndexCollector(on_error)
    labels = _labels(root, out)
    files = sorted(root.rglob("*.dcm"))
    names = {p.relative_to(root).as_posix() for p in files} | {p.name for p in files}
    for missing in sorted(set(labels) - names):
        out.fail(missing, BadImageError(f"{root / 'labels.csv'}: file {missing!r} not found"))
    for path in files:
        try:
            ds = _read(path, pixels=False)
        except BadImageError as e:
            out.fail(str(path), e)
            continue
        rel = path.relative_to(root).as_posix()
        grade, gradable = labels.get(rel, labels.get(path.name, (UNKNOWN_GRADE, True)))
        patient = str(ds.get("PatientID", "") or "").strip() or path.stem
        side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip()
        eye = _EYES.get(side.upper(), "")
        image_id = str(path.relative_to(root).with_suffix("").as_posix())
        out.records.append(FundusRecord(path, grade, gradable, patient, eye, image_id, "dicom"))
    return out.result()
