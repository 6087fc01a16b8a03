import numpy as np

from server.training.sampling import class_of, epoch_indices


def _classes() -> np.ndarray:
    grade = np.repeat([0, 1, 2, 3, 4], [700, 150, 100, 30, 20])
    gradable = np.ones(len(grade), bool)
    gradable[:50] = False
    return class_of(grade, gradable)


def test_full_balance_draws_every_class_about_equally() -> None:
    classes = _classes()
    idx = np.concatenate([epoch_indices(classes, 1.0, seed=0, epoch=e) for e in range(5)])
    share = np.bincount(classes[idx], minlength=6) / len(idx)
    assert np.allclose(share, 1 / 6, atol=0.02)


def test_natural_order_is_a_permutation_and_power_interpolates() -> None:
    classes = _classes()
    idx = epoch_indices(classes, 0.0, seed=0, epoch=0)
    assert sorted(idx.tolist()) == list(range(len(classes)))
    half = np.concatenate([epoch_indices(classes, 0.5, seed=0, epoch=e) for e in range(5)])
    rare = (classes[half] == 4).mean()
    assert 20 / 1000 < rare < 1 / 6


def test_deterministic_per_epoch_and_disjoint_across_ranks() -> None:
    classes = _classes()
    a = epoch_indices(classes, 0.0, seed=1, epoch=3)
    assert np.array_equal(a, epoch_indices(classes, 0.0, seed=1, epoch=3))
    assert not np.array_equal(a, epoch_indices(classes, 0.0, seed=1, epoch=4))
    r0 = epoch_indices(classes, 0.0, seed=1, epoch=3, rank=0, world=2)
    r1 = epoch_indices(classes, 0.0, seed=1, epoch=3, rank=1, world=2)
    assert len(r0) == len(r1) and not set(r0) & set(r1)
