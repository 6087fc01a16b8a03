"""The image-quality gate: is this a fundus photograph at all, and is it good enough to grade."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class FundusCheckSettings:
    """Limits of the fundus-photograph checks (brightness on a 0-1 scale)."""

    work_size: int = 128
    """Images are measured resampled to this longest side."""
    framed: bool = True
    """The photograph shows a circular fundus field inside a dark border (tasks that crop to
    the fundus); otherwise the lit part of the frame is the field, whatever its shape, and only
    blankness, illumination and exposure are checked."""
    min_side: int = 32
    """Images whose shorter side is below this are too small to judge."""
    border_level: float = 10 / 255
    """Pixels whose brightest channel is at or below this are border, as in PreprocessSpec."""
    min_field_fraction: float = 0.15
    """The lit field must cover at least this share of the frame."""
    max_field_fraction: float = 0.95
    """Above this share there is no dark border around the field: not a fundus camera image."""
    min_uniform_std: float = 0.02
    """Whole-image brightness spread below this: a blank, single-colour image."""
    max_offset: float = 0.12
    """Largest distance of the field's centre from the frame's centre (share of the frame)."""
    min_circularity: float = 0.85
    """Overlap (IoU) the field needs with the circle its bounding box implies."""
    min_red_ratio: float = 1.2
    """A colour fundus is red-dominated: mean red over mean green and over mean blue."""
    min_brightness: float = 0.2
    """Median brightness of the field below this: underexposed."""
    max_brightness: float = 0.85
    """Median brightness of the field above this: overexposed."""
    min_contrast: float = 0.05
    """Spread of brightness inside the field relative to its median, below this: no detail."""
    min_sharpness: float = 0.015
    """Focus (RMS Laplacian in the field over its median brightness) below this: blurred."""
    max_dark_fraction: float = 0.15
    """Share of the field far darker than its median (eyelid, eyelash, shadow) above this."""

    def __post_init__(self) -> None:
        if self.work_size < 32:
            raise ValueError(f"work_size must be >= 32, got {self.work_size}")
        if not 0 < self.min_field_fraction < self.max_field_fraction <= 1:
            raise ValueError(
                "need 0 < min_field_fraction < max_field_fraction <= 1, got "
                f"{self.min_field_fraction} and {self.max_field_fraction}"
            )
        if not 0 <= self.min_brightness < self.max_brightness <= 1:
            raise ValueError(
                "need 0 <= min_brightness < max_brightness <= 1, got "
                f"{self.min_brightness} and {self.max_brightness}"
            )


DEFAULT_CHECKS = FundusCheckSettings()


NOT_ASSESSED = (
    "this task's model has no quality head: image quality is not assessed beyond the image checks"
)


@dataclass(frozen=True)
class Quality:
    """The gate's verdict on one image: gradable or not, a score in 0-1 and the reasons.

    ``assessed`` is False for a task without a quality head: then ``gradable`` and ``score``
    are None (nothing is invented) and ``reasons`` holds only the image checks' findings.
    """

    gradable: bool | None
    score: float | None
    reasons: tuple[str, ...]
    assessed: bool = True

    @property
    def passed(self) -> bool:
        """Whether the image may be classified: gradable, or (not assessed) no check failed."""
        return bool(self.gradable) if self.assessed else not self.reasons

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``assessed`` and a note only when the model did not assess it)."""
        body: dict[str, object] = {
            "gradable": self.gradable,
            "score": self.score,
            "reasons": list(self.reasons),
        }
        if not self.assessed:
            body.update(assessed=False, note=NOT_ASSESSED)
        return body


def checks_only(checks: list[str]) -> Quality:
    """The verdict for a task without a quality head: the image checks' reasons, no score."""
    return Quality(gradable=None, score=None, reasons=tuple(checks), assessed=False)


def _working_copy(image: np.ndarray, size: int) -> np.ndarray:
    """float32 RGB in 0-1 resampled so that its longest side is ``size``.

    Smaller images are enlarged too, so that the focus measure compares like with like.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale != 1:
        method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
        resized = Image.fromarray(image).resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), method
        )
        image = np.asarray(resized)
    return image.astype(np.float32) / 255.0


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(mask)`` in one labelling pass instead of a dilation repeated
    until nothing changes: the background is what of ``~mask`` reaches the frame's edge through
    4-connected pixels (the same connectivity), everything else is the field."""
    labels, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    outside = np.zeros(count + 1, dtype=bool)
    outside[edge] = True
    outside[0] = False  # label 0 is the field itself
    return ~outside[labels]


def _circularity(mask: np.ndarray) -> float:
    """IoU of the field with the circle (clipped to its bounding box) that the box implies."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    cy, cx = (top + bottom - 1) / 2, (left + right - 1) / 2
    radius = max(bottom - top, right - left) / 2
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    box = np.zeros_like(mask)
    box[top:bottom, left:right] = True
    ideal = disk & box
    union = (mask | ideal).sum()
    return float((mask & ideal).sum() / union) if union else 0.0


def _structure(x: np.ndarray, s: FundusCheckSettings) -> tuple[list[str], np.ndarray | None]:
    """Reasons the frame is not a fundus photograph, and the field mask when it may be one."""
    lum = x @ _LUMA
    if float(lum.std()) < s.min_uniform_std:
        return [
            f"not a fundus photograph: the image is uniform (brightness spread {lum.std():.3f}); "
            "capture the retina with the fundus camera"
        ], None
    brightest = np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])  # faster than max(2)
    mask = _fill_holes(brightest > s.border_level)
    fraction = float(mask.mean())
    if not s.framed and fraction >= s.min_field_fraction:
        return [], mask  # the lit part of the frame, whatever its shape
    if s.framed and fraction > s.max_field_fraction:
        return [
            "not a fundus photograph: no dark border around a circular field "
            f"(lit area {fraction:.0%} of the frame); upload a fundus camera image"
        ], None
    if fraction < s.min_field_fraction:
        return [
            f"no fundus field visible: only {fraction:.0%} of the frame is lit; "
            "check the camera's illumination and retake"
        ], None
    reasons: list[str] = []
    ys, xs = np.nonzero(mask)
    offset = float(np.hypot(ys.mean() / mask.shape[0] - 0.5, xs.mean() / mask.shape[1] - 0.5))
    if offset > s.max_offset:
        reasons.append(
            f"field off-centre by {offset:.0%} of the frame (at most {s.max_offset:.0%}); "
            "align the camera with the pupil and retake"
        )
    else:
        circularity = _circularity(mask)
        if circularity < s.min_circularity:
            reasons.append(
                f"not a fundus photograph: the lit area is not a circular field "
                f"(circularity {circularity:.2f} < {s.min_circularity:.2f})"
            )
    red, green, blue = x[mask].mean(axis=0)
    ratio = float(red / max(green, blue, 1e-3))
    if ratio < s.min_red_ratio:
        reasons.append(
            f"colours are not those of a colour fundus photograph (red/green {ratio:.2f} < "
            f"{s.min_red_ratio:.2f}); upload a colour fundus image"
        )
    return reasons, mask


def _exposure(x: np.ndarray, mask: np.ndarray, s: FundusCheckSettings) -> list[str]:
    """Reasons from brightness, contrast, focus and shadows inside the field."""
    lum = x @ _LUMA
    inner = ndimage.binary_erosion(mask, iterations=3)
    if inner.sum() < 16:
        inner = mask
    field = lum[inner]
    median = float(np.median(field))
    reasons: list[str] = []
    if median < s.min_brightness:
        reasons.append(
            f"underexposed: median brightness {median:.2f} (needs >= {s.min_brightness:.2f}); "
            "increase the flash or dilate the pupil and retake"
        )
    elif median > s.max_brightness:
        reasons.append(
            f"overexposed: median brightness {median:.2f} (needs <= {s.max_brightness:.2f}); "
            "reduce the flash and retake"
        )
    contrast = float(field.std()) / max(median, 1e-3)
    if contrast < s.min_contrast:
        reasons.append(
            f"no retinal detail inside the field (contrast {contrast:.3f} < {s.min_contrast:.3f})"
        )
    laplace = ndimage.laplace(ndimage.gaussian_filter(lum, 0.7))
    sharpness = float(np.sqrt(np.mean(laplace[inner] ** 2))) / max(median, 1e-3)
    if sharpness < s.min_sharpness:
        reasons.append(
            f"out of focus: sharpness {sharpness:.3f} (needs >= {s.min_sharpness:.3f}); "
            "refocus and retake"
        )
    smooth = ndimage.uniform_filter(lum, max(3, lum.shape[0] // 14))
    dark = float((smooth[inner] < 0.4 * median).mean())
    if dark > s.max_dark_fraction:
        reasons.append(
            f"part of the field is shadowed ({dark:.0%} of it; at most "
            f"{s.max_dark_fraction:.0%}): eyelid, eyelashes or a small pupil; retake"
        )
    return reasons


def fundus_checks(image: np.ndarray, settings: FundusCheckSettings = DEFAULT_CHECKS) -> list[str]:
    """Reasons ``image`` (uint8 H x W x 3 RGB) is not a gradable fundus photograph; [] if none."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < settings.min_side:
        return [
            f"image too small to judge: {image.shape[1]} x {image.shape[0]} pixels "
            f"(at least {settings.min_side} on each side); upload the camera's full image"
        ]
    x = _working_copy(image, settings.work_size)
    reasons, mask = _structure(x, settings)
    if mask is None:
        return reasons
    return reasons + _exposure(x, mask, settings)


def assess_quality(checks: list[str], gradable_prob: float, threshold: float = 0.5) -> Quality:
    """Combine the fundus checks with the model's P(gradable) at ``threshold``.

    The score is the model's probability, capped just below the threshold when a check failed,
    so that a score at or above the threshold always means gradable.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"gradable threshold must be in (0, 1), got {threshold}")
    p = float(gradable_prob)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"gradable probability must be in [0, 1], got {gradable_prob}")
    reasons = list(checks)
    if p < threshold:
        reasons.append(
            f"the model judges the image ungradable (P(gradable) {p:.2f} < {threshold:.2f}); retake"
        )
    gradable = not reasons
    score = p if gradable or p < threshold else float(np.nextafter(threshold, 0.0))
    return Quality(gradable=gradable, score=score, reasons=tuple(reasons))
