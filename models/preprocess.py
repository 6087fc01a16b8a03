"""The one preprocessing spec: crop to the fundus (or not), resize, normalise; the device reuses
it. RGB, or grey (``channel_order`` ``L``: one channel, the luminance)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.task import TaskSpec


class PreprocessSpec(BaseModel):
    """Serialisable preprocessing: what a model expects its input to look like."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    size: int = Field(64, ge=16, le=1024, description="square side in pixels")
    crop_threshold: int = Field(10, ge=0, le=254, description="max channel at or below: border")
    mean: tuple[float, ...] = (0.45, 0.22, 0.10)
    std: tuple[float, ...] = (0.28, 0.15, 0.08)
    layout: Literal["NCHW"] = "NCHW"
    channel_order: Literal["RGB", "L"] = "RGB"
    crop: Literal["fundus_crop", "resize"] = "fundus_crop"
    """``fundus_crop``: crop the black border to the fundus and pad to a square before resizing;
    ``resize``: resize the whole image."""

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> PreprocessSpec:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need {self.channels} values for {self.channel_order} input, got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        return self

    @property
    def channels(self) -> int:
        """3 for RGB, 1 for grey."""
        return 3 if self.channel_order == "RGB" else 1

    def to_channels(self, image: np.ndarray) -> np.ndarray:
        """A uint8 RGB (H, W, 3) or grey (H, W) / (H, W, 1) image in this spec's channels."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 image (H, W, C), got {image.dtype} {image.shape}")
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[2] not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels, got {image.shape}")
        if image.shape[2] == self.channels:
            return image
        if self.channels == 3:
            return np.repeat(image, 3, axis=2)
        return luminance(image)

    def to_square(self, image: np.ndarray) -> np.ndarray:
        """Crop the black border to the fundus (``crop`` ``fundus_crop``), pad to a square and
        resize; uint8 (size, size, 3), or (size, size, 1) for grey."""
        image = self.to_channels(image)
        if self.crop == "resize":
            return self._resized(image)
        box = self.fundus_box(image)
        if box is not None:
            top, bottom, left, right = box
            image = image[top:bottom, left:right]
        h, w = image.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, image.shape[2]), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = image
        return self._resized(square)

    def fundus_box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The bounds (top, bottom, left, right; ends exclusive) of the pixels brighter than
        ``crop_threshold`` in any channel of a uint8 (H, W, C) image; None when none is."""
        brightest = image[..., 0]
        for c in range(1, image.shape[2]):  # a chain of maxima: far faster than max(axis=2)
            brightest = np.maximum(brightest, image[..., c])
        mask = brightest > self.crop_threshold
        rows = np.flatnonzero(mask.any(axis=1))
        if not len(rows):
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1

    def field_side(self, image: np.ndarray) -> int:
        """The side of the square :meth:`to_square` takes from ``image`` before resizing: the
        fundus crop's longer side (the image's when nothing is bright), or the image's shorter
        side for a plain ``resize``, which squeezes the frame."""
        if self.crop == "resize":
            return min(image.shape[:2])
        box = self.fundus_box(image)
        if box is None:
            return max(image.shape[:2])
        top, bottom, left, right = box
        return max(bottom - top, right - left)

    def _resized(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == (self.size, self.size):
            return image
        pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
        resized = np.asarray(
            pil.resize((self.size, self.size), Image.Resampling.BILINEAR), dtype=np.uint8
        )
        return resized.reshape(self.size, self.size, image.shape[2])

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, size, size, C) to normalised float32 (N, C, size, size); RGB images are
        taken to grey (:func:`luminance`) for a grey spec."""
        if images.ndim == 4 and images.shape[-1] == 3 and self.channels == 1:
            images = luminance(images)
        if images.ndim != 4 or images.shape[1:] != (self.size, self.size, self.channels):
            raise ValueError(
                f"expected (N, {self.size}, {self.size}, {self.channels}) images, got "
                f"{images.shape}"
            )
        scale = np.float32(1.0 / 255.0) / np.asarray(self.std, np.float32)
        shift = np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)
        x = images.astype(np.float32) * scale - shift
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Raw images (any sizes, RGB or grey) to the model's input tensor."""
        squares = [
            img
            if img.shape == (self.size, self.size, self.channels)
            else self.to_square(np.asarray(img))
            for img in images
        ]
        return self.normalise(np.stack(squares))

    @classmethod
    def for_task(cls, task: TaskSpec, size: int | None = None) -> PreprocessSpec:
        """The task's input (channels, crop) at ``size`` (default: the task's), with default
        mean and std (:meth:`fitted` measures them on data)."""
        size = size or task.input.size
        if task.input.channels == 1:
            grey = {"channel_order": "L", "mean": (0.3,), "std": (0.2,)}
            return cls(size=size, crop=task.input.preprocessing, **grey)
        return cls(size=size, crop=task.input.preprocessing)

    @classmethod
    def fitted(cls, images: np.ndarray, **kwargs: object) -> PreprocessSpec:
        """A spec whose mean and std are those of ``images`` (uint8 N x H x W x C, C = 3 for
        RGB and 1 for grey) in-field."""
        channels = images.shape[-1]
        if channels == 1:
            kwargs = {"channel_order": "L", **kwargs}
        # moments a few images at a time: a float copy of every pixel at once would be 16x
        # the images' own size
        total = np.zeros((2, 3, channels))  # (in-field, all) x (count, sum, sum of squares)
        step = max(1, (1 << 20) // max(images.shape[1] * images.shape[2], 1))  # ~1 M pixels
        for start in range(0, len(images), step):
            x = images[start : start + step].reshape(-1, channels).astype(np.float64) / 255.0
            for row, keep in enumerate((x.max(1) > 0.04, slice(None))):
                part = x[keep]
                total[row] += (np.full(channels, len(part)), part.sum(0), (part**2).sum(0))
        count, first, second = total[0] if total[0, 0, 0] else total[1]
        mean = first / count
        var = np.maximum(second / count - mean**2, 0.0)
        return cls(
            mean=tuple(float(v) for v in mean),
            std=tuple(float(max(np.sqrt(v), 1e-3)) for v in var),
            size=images.shape[1],
            **kwargs,
        )


def images_per_batch(size: int, pixels: int = 1 << 22, cap: int = 256) -> int:
    """How many ``size``-px square images make a batch of about ``pixels`` pixels (at least 1,
    at most ``cap``): inference batches that stay small at clinical sizes (28 at 384 px)."""
    return max(1, min(cap, pixels // (size * size)))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) to grey (..., 1): ITU-R 601-2 luma, computed exactly as Pillow's
    ``convert("L")``, so training data and the device's input agree to the bit."""
    x = rgb.astype(np.uint32)
    y = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)[..., None]
