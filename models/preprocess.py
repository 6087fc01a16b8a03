"""The one preprocessing spec: crop to the fundus, resize, normalise; the device reuses it."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field


class PreprocessSpec(BaseModel):
    """Serialisable preprocessing: what a model expects its input to look like."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    size: int = Field(64, ge=16, le=1024, description="square side in pixels")
    crop_threshold: int = Field(10, ge=0, le=254, description="max channel at or below: border")
    mean: tuple[float, float, float] = (0.45, 0.22, 0.10)
    std: tuple[float, float, float] = (0.28, 0.15, 0.08)
    layout: Literal["NCHW"] = "NCHW"
    channel_order: Literal["RGB"] = "RGB"

    def to_square(self, image: np.ndarray) -> np.ndarray:
        """Crop the black border to the fundus, pad to a square and resize (uint8 H x W x 3)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}"
            )
        mask = image.max(axis=2) > self.crop_threshold
        if mask.any():
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            image = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = image.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, 3), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = image
        if side == self.size:
            return square
        resized = Image.fromarray(square).resize((self.size, self.size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, size, size, 3) to normalised float32 (N, 3, size, size)."""
        if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3):
            raise ValueError(
                f"expected (N, {self.size}, {self.size}, 3) images, got {images.shape}"
            )
        scale = np.float32(1.0 / 255.0) / np.asarray(self.std, np.float32)
        shift = np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)
        x = images.astype(np.float32) * scale - shift
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Raw RGB images (any sizes) to the model's input tensor."""
        squares = [
            img if img.shape[:2] == (self.size, self.size) else self.to_square(img)
            for img in images
        ]
        return self.normalise(np.stack(squares))

    @classmethod
    def fitted(cls, images: np.ndarray, **kwargs: object) -> PreprocessSpec:
        """A spec whose mean and std are those of ``images`` (uint8 N x H x W x 3) in-field."""
        x = images.reshape(-1, 3).astype(np.float32) / 255.0
        inside = x.max(1) > 0.04
        x = x[inside] if inside.any() else x
        mean = tuple(float(v) for v in x.mean(0))
        std = tuple(float(max(v, 1e-3)) for v in x.std(0))
        return cls(mean=mean, std=std, size=images.shape[1], **kwargs)
