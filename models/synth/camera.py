"""Camera-size fundus photographs: synthetic renders placed on a fundus camera's sensor, as JPEG.

Fundus cameras write 2-12 MP JPEGs: a circular field of view on a black sensor (about 3000 x 2250
px, 0.5-1 MB). :func:`camera_jpeg` turns one of the generator's square renders into such a file
(scaled up to the field's diameter, sensor noise, JPEG at a camera's quality), and
:func:`write_camera_set` writes a folder of them with a ``labels.csv`` that ``fovea data prepare
--layout csv`` reads, so the decoding and screening paths can be measured at clinical size.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.synth.generator import generate
from models.synth.profiles import get_site

CAMERA_WIDTH, CAMERA_HEIGHT = 3000, 2250


@dataclass(frozen=True)
class CameraOptions:
    """The sensor, the field of view on it and the JPEG written."""

    width: int = CAMERA_WIDTH
    height: int = CAMERA_HEIGHT
    field: float = 0.97
    """Diameter of the field of view as a share of the sensor's height."""
    quality: int = 92
    noise: int = 3
    """Sensor noise: uniform integer steps in [-noise, noise] on every pixel."""

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64:
            raise ValueError(f"sensor must be >= 64 x 64 px, got {self.width} x {self.height}")
        if not 0.2 <= self.field <= 1.0:
            raise ValueError(f"field must be 0.2-1.0 of the sensor's height, got {self.field}")
        if not 1 <= self.quality <= 100 or not 0 <= self.noise <= 32:
            raise ValueError(f"quality 1-100 and noise 0-32, got {self.quality}, {self.noise}")


def camera_jpeg(square: np.ndarray, rng: np.random.Generator, options: CameraOptions) -> bytes:
    """``square`` (uint8 H x H x 3, black outside its circular field) as a camera's JPEG."""
    diameter = round(options.height * options.field)
    field = Image.fromarray(square).resize((diameter, diameter), Image.Resampling.BICUBIC)
    sensor = np.zeros((options.height, options.width, 3), np.uint8)
    top, left = (options.height - diameter) // 2, (options.width - diameter) // 2
    sensor[top : top + diameter, left : left + diameter] = np.asarray(field)
    if options.noise:
        noise = rng.integers(-options.noise, options.noise + 1, sensor.shape, dtype=np.int16)
        sensor = np.clip(sensor + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(sensor).save(out, "JPEG", quality=options.quality)
    return out.getvalue()


@dataclass(frozen=True)
class CameraSet:
    """What :func:`write_camera_set` wrote: the image folder's root and its labels."""

    root: Path
    labels: Path
    images: int


_CHUNK = 50


def _write_chunk(job: tuple[Path, str, int, int, int, int, CameraOptions]) -> list[list[str]]:
    """Render images ``start..start+n`` of the set and write them; their CSV rows."""
    root, site, start, n, render, seed, options = job
    arrays = generate(get_site(site), n, size=render, seed=seed * 1_000_003 + start)
    rng = np.random.default_rng([seed, start])
    rows = []
    for i in range(n):
        name = f"images/{start + i:06d}.jpg"
        (root / name).write_bytes(camera_jpeg(arrays.images[i], rng, options))
        grade = int(arrays.grade[i])
        label = "ungradable" if grade < 0 else str(grade)
        eye = "right" if i % 2 else "left"
        rows.append([name, label, f"{arrays.patient[i]}-{start}", eye])
    return rows


def write_camera_set(
    root: Path,
    n: int,
    *,
    site: str = "site-a",
    render: int = 256,
    seed: int = 0,
    options: CameraOptions | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> CameraSet:
    """Write ``n`` camera JPEGs of ``site``'s synthetic fundi (rendered at ``render`` px) under
    ``root/images`` and a ``root/labels.csv`` (image, label, patient, eye; DR grades 0-4 or
    ``ungradable``). A set already written with the same count is kept."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    options = options or CameraOptions()
    labels = root / "labels.csv"
    if labels.is_file() and sum(1 for _ in labels.open()) == n + 1:
        return CameraSet(root, labels, n)
    (root / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(root, site, s, min(_CHUNK, n - s), render, seed, options) for s in range(0, n, _CHUNK)]
    rows: list[list[str]] = []
    with ProcessPoolExecutor(max_workers=max(workers, 1)) as pool:
        for chunk in pool.map(_write_chunk, jobs):
            rows.extend(chunk)
            if progress is not None:
                progress(len(rows), n)
    tmp = labels.with_name("labels.csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "patient", "eye"])
        writer.writerows(rows)
    tmp.replace(labels)
    return CameraSet(root, labels, n)
