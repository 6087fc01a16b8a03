import numpy as np
import pytest

from models.preprocess import PreprocessSpec


def test_to_square_crops_border_and_resizes() -> None:
    img = np.zeros((50, 80, 3), np.uint8)
    img[5:45, 20:60] = 200
    out = PreprocessSpec(size=20).to_square(img)
    assert out.shape == (20, 20, 3)
    assert out[2:18, 2:18].min() > 150  # the border is gone: the fundus fills the frame


def test_normalise_layout_and_values() -> None:
    spec = PreprocessSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = spec.normalise(np.full((2, 16, 16, 3), 255, np.uint8))
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.float32
    assert np.allclose(x, 2.0)
    with pytest.raises(ValueError, match=r"\(N, 16, 16, 3\)"):
        spec.normalise(np.zeros((2, 8, 8, 3), np.uint8))


def test_spec_round_trips_and_refuses_unknown_fields() -> None:
    spec = PreprocessSpec(size=32, mean=(0.1, 0.2, 0.3))
    assert PreprocessSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match="extra"):
        PreprocessSpec.model_validate({"size": 32, "colour": "rgb"})


def test_call_accepts_mixed_sizes() -> None:
    spec = PreprocessSpec(size=16)
    imgs = [np.full((16, 16, 3), 100, np.uint8), np.full((40, 30, 3), 100, np.uint8)]
    assert spec(imgs).shape == (2, 3, 16, 16)
