"""The fundus checks and the quality gate, on synthetic fundus photographs and non-fundus images."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.screening import FundusCheckSettings, assess_quality, fundus_checks
from models.synth import SITES, generate


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """Images of every site at two sizes, and which are gradable."""
    images, gradable = [], []
    for size in (96, 192):
        for site in SITES.values():
            batch = generate(site, 60, size=size, seed=11)
            images += list(batch.images)
            gradable += list(batch.gradable)
    return np.asarray(images, dtype=object), np.asarray(gradable)


def test_gradable_synthetic_fundus_images_pass(synthetic: tuple[np.ndarray, np.ndarray]) -> None:
    images, gradable = synthetic
    failed = [
        (i, fundus_checks(img)) for i, img in enumerate(images[gradable]) if fundus_checks(img)
    ]
    assert gradable.sum() > 400
    assert failed == []


def test_ungradable_synthetic_images_are_flagged(synthetic: tuple[np.ndarray, np.ndarray]) -> None:
    images, gradable = synthetic
    missed = [i for i, img in enumerate(images[~gradable]) if not fundus_checks(img)]
    assert (~gradable).sum() >= 20
    assert missed == []


def _fundus(seed: int = 2) -> np.ndarray:
    batch = generate(SITES["site-a"], 8, size=128, seed=seed)
    return batch.images[np.flatnonzero(batch.gradable)[0]]


def _photo(rng: np.random.Generator) -> np.ndarray:
    """A photo-like scene: sky gradient, ground, a sun and a house, with sensor noise."""
    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), np.float32)
    sky = yy < 70
    img[sky] = np.stack([0.35 + 0.003 * yy, 0.55 + 0.003 * yy, 0.95 - 0.001 * yy], -1)[sky]
    img[~sky] = np.array([0.25, 0.55, 0.2])
    img[(yy - 25) ** 2 + (xx - 120) ** 2 < 150] = (1.0, 0.95, 0.6)
    img[60:100, 30:80] = (0.6, 0.3, 0.25)
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("grey", "uniform"),
        ("noise", "no dark border"),
        ("photo", "no dark border"),
        ("grey_disc", "colour fundus"),
        ("bright_square", "not a circular field"),
        ("black", "uniform"),
        ("tiny", "too small"),
    ],
)
def test_non_fundus_images_are_flagged(kind: str, expected: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "grey":
        image = np.full((200, 300, 3), 128, np.uint8)
    elif kind == "noise":
        image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    elif kind == "photo":
        image = _photo(rng)
    elif kind == "grey_disc":
        image = np.repeat(_fundus()[..., 1:2], 3, axis=2)
    elif kind == "bright_square":
        image = np.zeros((128, 128, 3), np.uint8)
        image[20:108, 20:108] = _fundus()[20:108, 20:108].mean((0, 1)).astype(np.uint8)
        image[20:108, 20:108] += rng.integers(0, 20, (88, 88, 3), dtype=np.uint8)
    elif kind == "black":
        image = np.zeros((128, 128, 3), np.uint8)
    else:
        image = _fundus()[::8, ::8]
    reasons = fundus_checks(image)
    assert any(expected in r for r in reasons), reasons


def test_checks_name_values_and_settings_can_be_changed() -> None:
    dark = (_fundus().astype(np.float32) * 0.25).astype(np.uint8)
    reasons = fundus_checks(dark)
    assert any(r.startswith("underexposed: median brightness 0.") for r in reasons), reasons
    assert fundus_checks(dark, FundusCheckSettings(min_brightness=0.05)) == []


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="min_brightness"):
        FundusCheckSettings(min_brightness=0.9, max_brightness=0.5)
    with pytest.raises(ValueError, match="uint8 RGB"):
        fundus_checks(np.zeros((64, 64), np.uint8))


def test_quality_gate_combines_checks_and_model() -> None:
    good = assess_quality([], 0.9, 0.5)
    assert good.gradable and good.score == 0.9 and good.reasons == ()
    model_says_no = assess_quality([], 0.3, 0.5)
    assert not model_says_no.gradable and "P(gradable) 0.30 < 0.50" in model_says_no.reasons[0]
    checks_say_no = assess_quality(["out of focus"], 0.95, 0.5)
    assert not checks_say_no.gradable and checks_say_no.reasons == ("out of focus",)
    assert checks_say_no.score < 0.5  # a score at or above the threshold always means gradable
    with pytest.raises(ValueError, match="threshold"):
        assess_quality([], 0.5, 1.0)
    with pytest.raises(ValueError, match="probability"):
        assess_quality([], float("nan"), 0.5)


def test_field_holes_are_filled_as_scipy_fills_them() -> None:
    from scipy import ndimage

    from edge_agent.screening.quality import _fill_holes

    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        mask = rng.random(shape) < rng.random()
        np.testing.assert_array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))
