"""The wire protocol: round config round trip and the reply codecs."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.fl.protocol import (
    SCALE_SUFFIX,
    RoundConfig,
    decode,
    encode,
    payload_bytes,
)


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
        "bn.running_mean": rng.normal(size=(8,)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "head.bias": rng.normal(size=(5,)).astype(np.float32),
    }


def test_round_config_round_trips_and_ignores_foreign_keys() -> None:
    config = RoundConfig(server_round=3, lr=0.01, codec="int8-delta")
    wire = config.to_config()
    assert wire["local-epochs"] == 1 and wire["codec"] == "int8-delta"
    assert RoundConfig.from_config({**wire, "dp-clip": 1.0}) == config
    assert RoundConfig.from_config({}) == RoundConfig()


@pytest.mark.parametrize(
    ("key", "value"), [("codec", "zip"), ("lr", 0.0), ("heldout-fraction", 1.0)]
)
def test_round_config_rejects_bad_values(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        RoundConfig.from_config({key: value})


def test_none_and_fp16_round_trip() -> None:
    weights = _weights()
    for codec, tol in (("none", 0.0), ("fp16", 2e-3)):
        payload = encode(weights, None, codec)
        back = decode(payload, None, codec)
        assert back.keys() == weights.keys()
        for name, value in weights.items():
            assert back[name].dtype == value.dtype
            np.testing.assert_allclose(back[name], value, atol=tol * 4, rtol=tol)
    assert payload_bytes(encode(weights, None, "fp16")) < payload_bytes(weights)


def test_int8_delta_error_is_bounded_and_payload_is_smaller() -> None:
    reference = _weights(0)
    rng = np.random.default_rng(1)
    weights = {
        k: (
            v + rng.normal(scale=0.05, size=v.shape).astype(np.float32)
            if v.dtype.kind == "f"
            else v
        )
        for k, v in reference.items()
    }
    payload = encode(weights, reference, "int8-delta")
    assert payload["conv.weight"].dtype == np.int8
    assert payload["bn.num_batches_tracked"].dtype == np.int64
    back = decode(payload, reference, "int8-delta")
    for name, value in weights.items():
        if value.dtype.kind != "f":
            assert back[name] == value
            continue
        peak = float(np.max(np.abs(value - reference[name])))
        assert np.max(np.abs(back[name] - value)) <= peak / 127.0 / 2 + 1e-6
    assert payload_bytes(payload) < payload_bytes(weights) / 3


def test_int8_delta_keeps_nan_detectable() -> None:
    reference = _weights()
    weights = dict(reference, **{"head.bias": np.full(5, np.nan, dtype=np.float32)})
    back = decode(encode(weights, reference, "int8-delta"), reference, "int8-delta")
    assert np.isnan(back["head.bias"]).all()
    assert np.isfinite(back["conv.weight"]).all()


def test_decode_names_the_bad_tensor() -> None:
    reference = _weights()
    payload = encode(reference, reference, "int8-delta")
    del payload["head.bias" + SCALE_SUFFIX]
    payload["head.bias"] = payload["head.bias"].astype(np.float32)
    with pytest.raises(ValueError, match=r"head\.bias"):
        decode(payload, reference, "int8-delta")
    with pytest.raises(ValueError, match="reference"):
        encode(reference, None, "int8-delta")
