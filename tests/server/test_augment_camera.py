"""Camera augmentation: optics blur and sensor noise, per image, reproducible."""

import pytest
import torch
from pydantic import ValidationError

from server.distill.config import AugmentConfig
from server.training.augmentation import augment

PLAIN = {"flips": False, "brightness": 0, "contrast": 0, "saturation": 0, "erase_p": 0}


def _images(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, 24, 24, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2


def _roughness(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontal neighbours, per image."""
    return (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))


def test_blur_softens_each_image_by_its_own_share() -> None:
    x = _images()
    out = augment(x, AugmentConfig(**PLAIN, blur=1.0), torch.Generator().manual_seed(0))
    r_in, r_out = _roughness(x), _roughness(out)
    assert bool((r_out <= r_in + 1e-6).all())
    drop = 1 - r_out / r_in
    assert drop.max() > 0.3  # some images blurred strongly
    assert drop.max() - drop.min() > 0.2  # and by different amounts
    # a blur keeps an image's brightness: no lesion or field is added or removed
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=0.01)


def test_blur_keeps_a_flat_image_flat() -> None:
    x = torch.full((2, 3, 8, 8), 0.4)
    out = augment(x, AugmentConfig(**PLAIN, blur=1.0), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x)


def test_noise_is_bounded_per_image_and_reproducible() -> None:
    x = _images(64)
    cfg = AugmentConfig(**PLAIN, noise=0.02)
    out = augment(x, cfg, torch.Generator().manual_seed(3))
    again = augment(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    std = (out - x).std((1, 2, 3))
    assert float(std.max()) < 0.02 * 1.15
    assert float(std.min()) < 0.01 < float(std.max())


def test_camera_augmentation_off_by_default_leaves_other_draws_unchanged() -> None:
    x = _images()
    base = AugmentConfig()
    assert base.blur == 0 and base.noise == 0
    a = augment(x, base, torch.Generator().manual_seed(5))
    b = augment(x, AugmentConfig(blur=0, noise=0), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    c = augment(x, AugmentConfig(noise=0.01), torch.Generator().manual_seed(5))
    assert not torch.equal(a, c)


def test_noise_above_a_tenth_is_refused() -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(noise=0.2)
