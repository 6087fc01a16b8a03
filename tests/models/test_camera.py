"""Camera-size synthetic photographs: a JPEG of the sensor's size with the field centred."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.datasets import load_csv
from models.synth import CameraOptions, camera_jpeg, generate, get_site, write_camera_set
from models.task import DR_GRADING


def test_camera_jpeg_is_sensor_sized_with_a_dark_border_and_the_field_centred() -> None:
    square = generate(get_site("site-a"), 1, size=64, seed=0).images[0]
    data = camera_jpeg(square, np.random.default_rng(0), CameraOptions(width=800, height=600))
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert img.shape == (600, 800, 3)
    assert img[:, :40].mean() < 8 and img[:, -40:].mean() < 8  # black sensor beside the field
    assert img[250:350, 350:450, 0].mean() > 60  # the red fundus in the middle


def test_camera_options_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="field"):
        CameraOptions(field=1.5)


def test_camera_set_is_a_csv_layout_prepare_reads(tmp_path: Path) -> None:
    options = CameraOptions(width=320, height=240)
    made = write_camera_set(tmp_path, 6, render=64, options=options, workers=1)
    rows = list(csv.DictReader(made.labels.open()))
    assert len(rows) == 6 and all((tmp_path / r["image"]).is_file() for r in rows)
    index = load_csv(tmp_path, made.labels, DR_GRADING)
    assert len(index.records) == 6
    again = write_camera_set(tmp_path, 6, render=64, options=options, workers=1)
    assert again.labels.stat().st_mtime_ns == made.labels.stat().st_mtime_ns  # kept, not rewritten
