"""Checks every update must pass before it counts: codec, names, shapes, dtypes, finiteness, norm.

Plain functions over numpy dicts; the ServerApp calls them on each reply and logs and records
the reason of every rejection with the node's id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.fl import SCALE_SUFFIX, decode, is_trained
from server.federation.weights import Weights

__all__ = ["Candidate", "Verdict", "decode_update", "screen_updates", "update_norm"]


@dataclass(frozen=True)
class Candidate:
    """One node's decoded update, before screening (``reason`` set when decoding failed)."""

    node_id: int
    weights: Weights | None
    num_examples: float
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """Whether a node's update counts this round, and why not."""

    node_id: int
    accepted: bool
    reason: str = ""
    norm: float = float("nan")


def _payload_dtype_problem(
    payload: Mapping[str, np.ndarray], reference: Weights, codec: str
) -> str:
    for name, value in payload.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        ref = reference.get(name)
        if ref is None:
            continue  # named below, after decoding
        array = np.asarray(value)
        if not is_trained(ref) or codec == "none":
            expected = ref.dtype
        elif codec == "fp16":
            expected = np.dtype(np.float16)
        else:
            expected = np.dtype(np.int8)
        if array.dtype != expected:
            return f"{name!r} is {array.dtype}, expected {expected} (codec {codec})"
    return ""


def decode_update(
    node_id: int,
    payload: Mapping[str, np.ndarray],
    num_examples: float,
    reference: Weights,
    codec: str,
) -> Candidate:
    """Check the payload's dtypes against the codec and decode it against ``reference``."""
    if not (np.isfinite(num_examples) and num_examples > 0):
        return Candidate(node_id, None, 0.0, f"num-examples is {num_examples}, must be > 0")
    problem = _payload_dtype_problem(payload, reference, codec)
    if problem:
        return Candidate(node_id, None, num_examples, problem)
    try:
        weights = decode(payload, reference, codec)
    except ValueError as e:
        return Candidate(node_id, None, num_examples, f"cannot decode ({codec}): {e}")
    return Candidate(node_id, weights, num_examples)


def _structure_problem(weights: Weights, reference: Weights) -> str:
    missing = sorted(set(reference) - set(weights))
    extra = sorted(set(weights) - set(reference))
    if missing or extra:
        return f"parameter names differ: missing {missing[:3]}, unexpected {extra[:3]}"
    for name, ref in reference.items():
        array = np.asarray(weights[name])
        if array.shape != ref.shape:
            return f"{name!r} has shape {array.shape}, expected {ref.shape}"
        if array.dtype != ref.dtype:
            return f"{name!r} is {array.dtype}, expected {ref.dtype}"
        if is_trained(ref) and not np.isfinite(array).all():
            return f"{name!r} holds non-finite values (NaN or inf)"
    return ""


def update_norm(weights: Weights, reference: Weights) -> float:
    """L2 norm of ``weights - reference`` over the trained (floating) arrays."""
    total = 0.0
    for name, ref in reference.items():
        if is_trained(ref):
            delta = np.asarray(weights[name], dtype=np.float64) - ref.astype(np.float64)
            total += float(np.square(delta).sum())
    return float(np.sqrt(total))


def screen_updates(
    candidates: Sequence[Candidate], reference: Weights, max_norm_ratio: float
) -> list[Verdict]:
    """One verdict per candidate, in order.

    Rejected: a candidate that failed decoding; names, shapes or dtypes that differ from the
    round's global weights; any non-finite value; an update norm above ``max_norm_ratio`` times
    the median norm of the *other* valid updates this round (leave-one-out, so that with two or
    three nodes the outlier cannot drag the median up to its own level). A lone update has
    nothing to be compared with and is accepted if well-formed.
    """
    verdicts: dict[int, Verdict] = {}
    norms: dict[int, float] = {}
    for i, c in enumerate(candidates):
        problem = c.reason or (
            _structure_problem(c.weights, reference) if c.weights is not None else "no weights"
        )
        if problem:
            verdicts[i] = Verdict(c.node_id, False, problem)
        else:
            assert c.weights is not None
            norms[i] = update_norm(c.weights, reference)
    zero = {k: np.zeros_like(v) for k, v in reference.items()}
    floor = 1e-6 * (1.0 + update_norm(reference, zero))
    for i, norm in norms.items():
        others = [n for j, n in norms.items() if j != i]
        node = candidates[i].node_id
        if not others:
            verdicts[i] = Verdict(node, True, "", norm)
            continue
        bound = max_norm_ratio * max(float(np.median(others)), floor)
        if norm > bound:
            reason = (
                f"update norm {norm:.4g} exceeds {max_norm_ratio:g} x the median of the other "
                f"updates ({bound / max_norm_ratio:.4g})"
            )
            verdicts[i] = Verdict(node, False, reason, norm)
        else:
            verdicts[i] = Verdict(node, True, "", norm)
    return [verdicts[i] for i in range(len(candidates))]
