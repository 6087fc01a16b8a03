"""The test-only fault mod poisons exactly as documented (no processes: the unit part)."""

from __future__ import annotations

import numpy as np
import pytest
from fl_fault_mod import poison

from edge_agent.fl import decode, encode


def test_faults_poison_the_weights_as_documented() -> None:
    ref: dict[str, np.ndarray] = {"w": np.zeros(3, np.float32), "n": np.array(4, np.int64)}
    new: dict[str, np.ndarray] = {"w": np.full(3, 0.01, np.float32), "n": np.array(5, np.int64)}
    assert np.isnan(poison(new, ref, "nan")["w"]).all()
    np.testing.assert_allclose(poison(new, ref, "scale")["w"], 1.0, rtol=1e-5)
    assert poison(new, ref, "nan")["n"] == 5
    with pytest.raises(ValueError, match="fault"):
        poison(new, ref, "zero")


@pytest.mark.parametrize("codec", ["none", "fp16", "int8-delta"])
def test_poison_survives_every_codec(codec: str) -> None:
    ref = {"w": np.zeros(4, np.float32)}
    new = {"w": np.full(4, 0.01, np.float32)}
    sent = decode(encode(poison(new, ref, "nan"), ref, codec), ref, codec)
    assert np.isnan(sent["w"]).all()
    boosted = decode(encode(poison(new, ref, "scale"), ref, codec), ref, codec)
    np.testing.assert_allclose(boosted["w"], 1.0, rtol=1e-2)
