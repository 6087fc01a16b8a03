import numpy as np
import pytest

from models.datasets.arrays import FundusArrays
from models.metrics import _weighted_kappa
from models.synth.generator import generate
from models.synth.profiles import SITES, SiteProfile, get_site


def test_deterministic_by_seed_and_site() -> None:
    a = generate(SITES["site-a"], 70, size=48, seed=3)
    b = generate(SITES["site-a"], 70, size=48, seed=3)
    c = generate(SITES["site-a"], 70, size=48, seed=4)
    d = generate(SITES["site-b"], 70, size=48, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.grade, b.grade)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images, d.images)


def test_labels_and_layout() -> None:
    a = generate(SITES["site-c"], 600, size=32, seed=0)
    assert a.images.shape == (600, 32, 32, 3) and a.images.dtype == np.uint8
    assert set(np.unique(a.grade[a.gradable])) == {0, 1, 2, 3, 4}
    assert (a.grade[~a.gradable] == -1).all()
    assert 0.04 < (~a.gradable).mean() < 0.2
    # circular field on black: corners dark, centre bright
    assert a.images[a.gradable][:, 0, 0].max() < 30
    assert a.images[a.gradable][:, 16, 16].mean() > 60
    # two eyes per patient
    assert len(np.unique(a.patient)) == 300


def test_sites_differ_like_cameras() -> None:
    means = {
        s: generate(SITES[s], 100, size=32, seed=0).images.reshape(-1, 3).mean(0)
        for s in ("site-a", "site-d")
    }
    assert np.abs(means["site-a"] - means["site-d"]).max() > 5


def _stats_probe_kappa(images: np.ndarray, grade: np.ndarray) -> float:
    """Kappa of a logistic regression on per-channel mean and std (and their squares)."""
    x = images.reshape(len(images), -1, 3).astype(np.float64)
    f = np.concatenate([x.mean(1), x.std(1)], 1)
    f = (f - f.mean(0)) / f.std(0)
    f = np.concatenate([f, f**2, np.ones((len(f), 1))], 1)
    half = len(f) // 2
    w = np.zeros((f.shape[1], 5))
    onehot = np.eye(5)[grade[:half]]
    for _ in range(500):
        z = f[:half] @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * f[:half].T @ (p - onehot) / half
    pred = (f[half:] @ w).argmax(1)
    return float(_weighted_kappa(grade[half:], pred, np.ones((1, len(pred))))[0])


def test_global_statistics_carry_no_grade() -> None:
    """Within a site, per-channel mean and std alone predict the grade near chance."""
    a = generate(SITES["site-a"], 2000, size=32, seed=5)
    a = a.subset(a.gradable)
    assert _stats_probe_kappa(a.images, a.grade) <= 0.1
    # the probe is strong enough to catch a leak: brightness rising 5% per grade
    leaky = np.clip(a.images * (1 + 0.05 * a.grade[:, None, None, None]), 0, 255)
    assert _stats_probe_kappa(leaky.astype(np.uint8), a.grade) > 0.3


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="n must be positive"):
        generate(SITES["site-a"], 0)
    with pytest.raises(ValueError, match="unknown site 'nowhere'"):
        get_site("nowhere")
    with pytest.raises(ValueError, match="prevalence"):
        SiteProfile("x", prevalence=(0.5, 0.5, 0.5, 0.0, 0.0))


def test_arrays_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = generate(SITES["site-e"], 20, size=32, seed=1)
    b = FundusArrays.load(a.save(tmp_path / "e.npz"))
    assert np.array_equal(a.images, b.images) and list(a.patient) == list(b.patient)
