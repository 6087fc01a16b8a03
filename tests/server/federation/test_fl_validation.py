"""Update validation: decode, names, shapes, dtypes, finiteness and the norm bound."""

from __future__ import annotations

import numpy as np

from edge_agent.fl.protocol import encode
from server.federation.validation import decode_update, screen_updates


def _global() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "bn.running_mean": rng.normal(size=4).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def _update(ref: dict[str, np.ndarray], seed: int, size: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: (v + size * rng.normal(size=v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v
        for k, v in ref.items()
    }


def _screen(payloads: list[dict[str, np.ndarray]], codec: str = "none") -> list:
    ref = _global()
    cands = [decode_update(i + 1, p, 10.0, ref, codec) for i, p in enumerate(payloads)]
    return screen_updates(cands, ref, 3.0)


def test_honest_updates_pass() -> None:
    ref = _global()
    verdicts = _screen([_update(ref, s) for s in range(3)])
    assert [v.accepted for v in verdicts] == [True, True, True]
    assert all(v.norm > 0 for v in verdicts)


def test_nan_update_is_rejected_with_its_node() -> None:
    ref = _global()
    bad = _update(ref, 1)
    bad["conv.weight"][0, 0, 0, 0] = np.nan
    verdicts = _screen([_update(ref, 0), bad, _update(ref, 2)])
    assert [v.accepted for v in verdicts] == [True, False, True]
    assert verdicts[1].node_id == 2 and "non-finite" in verdicts[1].reason


def test_wrong_shape_missing_name_and_dtype_are_rejected() -> None:
    ref = _global()
    shape = _update(ref, 1)
    shape["conv.weight"] = shape["conv.weight"][:2]
    missing = _update(ref, 2)
    del missing["bn.running_mean"]
    dtype = _update(ref, 3)
    dtype["conv.weight"] = dtype["conv.weight"].astype(np.float64)
    verdicts = _screen([_update(ref, 0), shape, missing, dtype])
    assert [v.accepted for v in verdicts] == [True, False, False, False]
    assert "shape" in verdicts[1].reason
    assert "missing" in verdicts[2].reason
    assert "float64" in verdicts[3].reason


def test_scaled_update_is_rejected_among_three_and_among_two() -> None:
    ref = _global()
    scaled = {k: v * 10 if v.dtype.kind == "f" else v for k, v in ref.items()}
    three = _screen([_update(ref, 0), scaled, _update(ref, 2)])
    assert [v.accepted for v in three] == [True, False, True]
    assert "exceeds" in three[1].reason
    two = _screen([_update(ref, 0), scaled])
    assert [v.accepted for v in two] == [True, False]


def test_codecs_decode_and_check_dtypes() -> None:
    ref = _global()
    ups = [_update(ref, s) for s in range(3)]
    for codec in ("fp16", "int8-delta"):
        verdicts = _screen([encode(u, ref, codec) for u in ups], codec)
        assert all(v.accepted for v in verdicts), (codec, verdicts)
    # a float32 payload where int8-delta was asked for is refused before decoding
    verdicts = _screen([ups[0]], "int8-delta")
    assert not verdicts[0].accepted and "expected int8" in verdicts[0].reason


def test_zero_examples_is_rejected() -> None:
    ref = _global()
    cand = decode_update(4, _update(ref, 0), 0.0, ref, "none")
    (verdict,) = screen_updates([cand], ref, 3.0)
    assert not verdict.accepted and "num-examples" in verdict.reason
