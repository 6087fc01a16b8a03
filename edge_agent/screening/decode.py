"""Decode uploaded JPEG, PNG and DICOM bytes into RGB arrays, within limits, or say why not.

A JPEG may be decoded at a reduced DCT scale (libjpeg's 1/2, 1/4 or 1/8, through Pillow's
``Image.draft``) when the caller says how small its sides may become: a camera's 3000 x 2250
photograph then costs a fraction of a full decode."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

JPEG, PNG, DICOM = "jpeg", "png", "dicom"
_CONTENT_TYPES = {
    "image/jpeg": JPEG,
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    "image/png": PNG,
    "application/dicom": DICOM,
    "image/dicom": DICOM,
    "application/octet-stream": None,
}
_PHOTOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image",
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": "Ophthalmic Photography 16 Bit Image",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
}
_YBR = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


class ImageError(ValueError):
    """An upload that cannot be used as an image; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class DecodeLimits:
    """What an upload may be: its size in bytes and the pixels it decodes to."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 24_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(
                f"decode limits must be positive, got max_bytes={self.max_bytes}, "
                f"max_pixels={self.max_pixels}"
            )


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class Decoded:
    """A decoded upload: its pixels and the size (width, height) the file declared.

    ``pixels`` is smaller than ``declared`` when a JPEG was decoded at a reduced DCT scale;
    ``scale`` is that reduction (1, 2, 4 or 8).
    """

    pixels: np.ndarray
    declared: tuple[int, int]
    scale: int = 1


def sniff_format(data: bytes) -> str | None:
    """``"jpeg"``, ``"png"`` or ``"dicom"`` from the file's signature, None when none matches."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(data) >= 132 and data[128:132] == b"DICM":
        return DICOM
    return None


def _declared_format(content_type: str | None) -> str | None:
    """The format a Content-Type names (None: let the bytes tell), or 415 if unsupported."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in _CONTENT_TYPES:
        raise ImageError(
            f"unsupported content type {media!r}: send image/jpeg, image/png or application/dicom",
            415,
        )
    return _CONTENT_TYPES[media]


def _check_pixels(width: int, height: int, frames: int, limits: DecodeLimits, kind: str) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{kind} declares an empty image ({width} x {height} pixels)")
    pixels = width * height * max(frames, 1)
    if pixels > limits.max_pixels:
        raise ImageError(
            f"{kind} of {width} x {height} pixels"
            + (f" x {frames} frames" if frames > 1 else "")
            + f" exceeds the limit of {limits.max_pixels:,} pixels; send a smaller image",
            413,
        )


def _to_rgb(arr: np.ndarray, bits: int) -> np.ndarray:
    """Grey or colour pixels of any integer/float depth as uint8 H x W x 3."""
    if arr.dtype != np.uint8:
        values = arr.astype(np.float64)
        if np.issubdtype(arr.dtype, np.unsignedinteger) or np.issubdtype(arr.dtype, np.integer):
            values = values / float(2 ** max(min(bits, 32), 1) - 1) * 255.0
        else:
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            values = (np.nan_to_num(values, nan=low) - low) / (high - low or 1.0) * 255.0
        arr = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def _decode_pil(data: bytes, kind: str, limits: DecodeLimits, min_side: int | None) -> Decoded:
    name = kind.upper()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img: Image.Image = Image.open(io.BytesIO(data), formats=[name])
            declared = img.size
            _check_pixels(img.width, img.height, 1, limits, name)  # before any pixel is decoded
            if min_side is not None and kind == JPEG:
                # libjpeg scales by 1/2, 1/4 or 1/8 while decoding; draft() takes the largest
                # reduction that keeps both sides >= the request (a square: EXIF-safe)
                img.draft("RGB", (min_side, min_side))
            img.load()
            scale = round(declared[0] / img.width)
            ImageOps.exif_transpose(img, in_place=True)  # (a copy of the pixels otherwise)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                bits = 16 if img.mode != "F" else 8
                return Decoded(_to_rgb(np.asarray(img), bits), declared, scale)
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return Decoded(_to_rgb(np.asarray(rgb), 8), declared, scale)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"{name} rejected as a decompression bomb: {e}", 413) from e
        except Exception as e:  # a parser of untrusted bytes raises many kinds of error
            raise ImageError(f"cannot decode the {name} image: {e or type(e).__name__}") from e


def _dicom_pixels(ds: Any, limits: DecodeLimits) -> np.ndarray:
    if "PixelData" not in ds:
        raise ImageError("DICOM file has no pixel data (PixelData element missing)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except Exception as e:
        raise ImageError(f"DICOM file lacks a valid Rows/Columns/NumberOfFrames ({e})") from e
    _check_pixels(cols, rows, frames, limits, "DICOM image")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("RGB", "MONOCHROME1", "MONOCHROME2", *_YBR) or samples not in (1, 3):
        raise ImageError(
            f"DICOM photometric interpretation {photometric or '(none)'!r} with {samples} "
            "samples per pixel is not supported; send RGB, YBR or monochrome pixel data",
            415,
        )
    try:
        arr = np.asarray(ds.pixel_array)  # pydicom 3 converts YBR to RGB itself
    except Exception as e:  # decoders raise many types (missing plugin, truncated data, ...)
        raise ImageError(f"cannot decode the DICOM pixel data: {e or type(e).__name__}") from e
    if frames > 1:
        arr = arr[0]
    expected = (rows, cols) if samples == 1 else (rows, cols, 3)
    if arr.shape != expected:
        raise ImageError(f"DICOM pixel data has shape {arr.shape}, expected {expected}")
    rgb = _to_rgb(arr, int(ds.get("BitsStored", 8) or 8))
    return 255 - rgb if photometric == "MONOCHROME1" else rgb


def _decode_dicom(data: bytes, limits: DecodeLimits) -> np.ndarray:
    import pydicom

    with warnings.catch_warnings():
        # pydicom warns about each odd value of a malformed upload; the ImageError says enough
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            sop = str(ds.get("SOPClassUID", "") or "")
        except Exception as e:
            raise ImageError(f"not a readable DICOM file: {e or type(e).__name__}") from e
        if sop and sop not in _PHOTOGRAPH_SOP_CLASSES:
            name = getattr(ds.SOPClassUID, "name", sop)
            raise ImageError(
                f"DICOM SOP class {sop} ({name}) is not a photograph; send Ophthalmic Photography",
                415,
            )
        try:
            return _dicom_pixels(ds, limits)
        except ImageError:
            raise
        except Exception as e:  # elements of a malformed file fail when they are first read
            raise ImageError(f"malformed DICOM file: {e or type(e).__name__}") from e


def decoded_size(
    data: bytes,
    content_type: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    min_side: int | None = None,
) -> int:
    """The bytes :func:`decode_upload` would decode ``data`` to (RGB, after any DCT scaling),
    read from the file's header alone; 0 when the header cannot tell (the decode will say)."""
    found = sniff_format(data)
    try:
        if found == DICOM:
            import pydicom

            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            return int(ds.Rows) * int(ds.Columns) * max(frames, 1) * 3 * 8  # up to float64
        if found in (JPEG, PNG):
            img = Image.open(io.BytesIO(data), formats=[found.upper()])
            _check_pixels(img.width, img.height, 1, limits, found.upper())
            if min_side is not None and found == JPEG:
                img.draft("RGB", (min_side, min_side))
            return img.width * img.height * 3 * (2 if img.mode.startswith("I") else 1)
    except ImageError:
        raise
    except Exception:  # an unreadable header: decoding it says what is wrong
        return 0
    return 0


def decode_image(
    data: bytes, content_type: str | None = None, limits: DecodeLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decode JPEG, PNG or DICOM (Part 10) bytes to a uint8 RGB (H, W, 3) array at full size.

    Raises :class:`ImageError` (status 400 malformed, 413 too large, 415 unsupported type) for
    anything that cannot be decoded within ``limits``; nothing else escapes.
    """
    return decode_upload(data, content_type, limits).pixels


def decode_upload(
    data: bytes,
    content_type: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    min_side: int | None = None,
) -> Decoded:
    """Decode JPEG, PNG or DICOM (Part 10) bytes to uint8 RGB pixels and the declared size.

    With ``min_side``, a JPEG is decoded at the smallest DCT scale (1/1 to 1/8) whose width
    and height both stay >= ``min_side`` (never below the declared size's own sides); PNG and
    DICOM are always decoded in full. The pixel limit is checked on the declared size before
    decoding. Raises :class:`ImageError` as :func:`decode_image` does.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be >= 1 pixel, got {min_side}")
    if not data:
        raise ImageError("empty upload: no image bytes received")
    if len(data) > limits.max_bytes:
        raise ImageError(
            f"upload of {len(data):,} bytes exceeds the limit of {limits.max_bytes:,} bytes", 413
        )
    declared = _declared_format(content_type)
    found = sniff_format(data)
    if found is None:
        raise ImageError(
            "unrecognised image format: expected a JPEG, PNG or DICOM Part 10 file"
            + (f" (declared {content_type})" if content_type else ""),
            415 if declared is None else 400,
        )
    if declared is not None and declared != found:
        raise ImageError(
            f"content type {content_type!r} does not match the data, which is a "
            f"{found.upper()} file; send the right Content-Type",
            415,
        )
    if found == DICOM:
        pixels = _decode_dicom(data, limits)
        return Decoded(pixels, (pixels.shape[1], pixels.shape[0]))
    return _decode_pil(data, found, limits, min_side)
