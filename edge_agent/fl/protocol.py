"""What crosses the wire in a federated round: record names, config and metric keys, codecs.

Shared by the ClientApp (``edge_agent.fl``) and the ServerApp (``server.federation``). Pure
numpy: nothing here imports torch or Flower, so both sides and their unit tests can use it.

Messages (Flower Message API, ``RecordDict`` contents):

- train / evaluate instruction: ``{ARRAYS: ArrayRecord(global weights, float32, codec "none"),
  CONFIG: ConfigRecord(RoundConfig.to_config())}``.
- train reply: ``{ARRAYS: ArrayRecord(encode(weights, global, codec)), METRICS: MetricRecord}``
  with the ``M_*`` keys below (``M_NUM_EXAMPLES`` weights the average).
- evaluate reply: ``{METRICS: MetricRecord}`` with ``M_EVAL_*`` keys and
  ``M_NUM_EXAMPLES`` = number of held-out cases evaluated.
- decline (either kind): ``{METRICS: MetricRecord({M_DECLINED: 1, M_NUM_EXAMPLES: 0}),
  STATUS: ConfigRecord({S_REASON: "..."})}``; the server logs the reason and does not count it.

Parameter names are the torch ``state_dict`` keys. Only floating-point arrays are trained and
averaged (BatchNorm running statistics included); integer arrays (``num_batches_tracked``) pass
through every codec unchanged and the server keeps its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import numpy as np

__all__ = [
    "ARRAYS",
    "CODECS",
    "CONFIG",
    "METRICS",
    "M_BYTES_SENT",
    "M_DECLINED",
    "M_EVAL_ACCURACY",
    "M_EVAL_NUM_EXAMPLES",
    "M_EVAL_REFERABLE_SENSITIVITY",
    "M_NUM_EXAMPLES",
    "M_TRAIN_LOSS",
    "NORM_STATS",
    "NORM_STATS_AUTO_BELOW",
    "SCALE_SUFFIX",
    "STATUS",
    "S_REASON",
    "S_SITE",
    "Codec",
    "RoundConfig",
    "decode",
    "encode",
    "is_trained",
    "payload_bytes",
]

# RecordDict keys
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
STATUS = "status"

# ConfigRecord STATUS keys: a decline's reason; an evaluation's site name (node config ``site``)
S_REASON = "reason"
S_SITE = "site"

# MetricRecord keys of a reply
M_NUM_EXAMPLES = "num-examples"
M_TRAIN_LOSS = "train-loss"
M_EVAL_ACCURACY = "eval-accuracy"
M_EVAL_REFERABLE_SENSITIVITY = "eval-referable-sensitivity"
M_EVAL_NUM_EXAMPLES = "eval-num-examples"
M_BYTES_SENT = "bytes-sent"
M_DECLINED = "declined"

Codec = Literal["none", "fp16", "int8-delta"]
CODECS: tuple[str, ...] = get_args(Codec)

NormStats = Literal["auto", "local", "frozen"]
NORM_STATS: tuple[str, ...] = get_args(NormStats)
NORM_STATS_AUTO_BELOW = 256
"""Under ``norm-stats = "auto"`` a device with fewer training cases than this keeps the global
BatchNorm statistics: the means and variances of a few dozen images of one site, averaged across
sites, cost the demo student 8 points on the held-out site with no gradient step at all."""

# int8-delta: each quantised tensor NAME travels with NAME + SCALE_SUFFIX (float32, shape (1,)).
# "::" never occurs in a torch state_dict key.
SCALE_SUFFIX = "::scale"


@dataclass(frozen=True)
class RoundConfig:
    """One round's instructions to the devices (the ConfigRecord under ``CONFIG``).

    The field names map to the wire keys by ``_`` -> ``-`` (``local_epochs`` ->
    ``"local-epochs"``).
    """

    server_round: int = 1
    local_epochs: int = 1
    lr: float = 1e-3
    proximal_mu: float = 0.01
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    batch_size: int = 16
    min_cases: int = 16
    codec: str = "none"
    heldout_fraction: float = 0.2
    class_balance: float = 0.5
    """Class weights of the hard loss: ``(share of the class) ** -class_balance`` over the
    task's classes (0: plain cross-entropy, 1: inverse frequency), so rare referable classes
    are not drowned out."""
    norm_stats: str = "auto"
    """BatchNorm during local training: ``local`` re-estimates the running statistics on the
    device's batches, ``frozen`` keeps the global ones (normalisation layers in eval mode),
    ``auto`` freezes them below :data:`NORM_STATS_AUTO_BELOW` training cases."""

    def __post_init__(self) -> None:
        checks = [
            (self.server_round >= 0, "server-round must be >= 0"),
            (self.local_epochs >= 1, "local-epochs must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.proximal_mu >= 0, "proximal-mu must be >= 0"),
            (0.0 <= self.distill_alpha <= 1.0, "distill-alpha must be in [0, 1]"),
            (self.distill_temperature > 0, "distill-temperature must be > 0"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (self.min_cases >= 1, "min-cases must be >= 1"),
            (self.codec in CODECS, f"codec must be one of {', '.join(CODECS)}"),
            (0.0 <= self.heldout_fraction < 1.0, "heldout-fraction must be in [0, 1)"),
            (0.0 <= self.class_balance <= 1.0, "class-balance must be in [0, 1]"),
            (self.norm_stats in NORM_STATS, f"norm-stats must be one of {', '.join(NORM_STATS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"round config: {message} (got {self})")

    def to_config(self) -> dict[str, int | float | str]:
        """The wire form: a plain dict for ``ConfigRecord``, keys like ``"local-epochs"``."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RoundConfig:
        """Read the wire form; missing keys take defaults, keys for others (DP mods) are ignored."""
        kwargs: dict[str, Any] = {}
        for field in fields(cls):
            key = field.name.replace("_", "-")
            if key not in config:
                continue
            value = config[key]
            default = getattr(cls, field.name)
            try:
                kwargs[field.name] = type(default)(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"round config: {key!r} = {value!r} is not a {type(default).__name__}"
                ) from None
        return cls(**kwargs)


def is_trained(array: np.ndarray) -> bool:
    """Whether an array is a trained/averaged parameter (floating point) or passes through."""
    return bool(np.issubdtype(array.dtype, np.floating))


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}: use one of {', '.join(CODECS)}")


def _need_reference(reference: Mapping[str, np.ndarray] | None, name: str) -> np.ndarray:
    if reference is None:
        raise ValueError("codec int8-delta needs the round's global weights as reference")
    if name not in reference:
        raise ValueError(f"codec int8-delta: {name!r} is not in the reference weights")
    return np.asarray(reference[name])


def encode(
    weights: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None,
    codec: str,
) -> dict[str, np.ndarray]:
    """Compress a client's weights for the reply.

    ``none``: float32 copies. ``fp16``: floating arrays cast to float16. ``int8-delta``: for each
    floating array, ``delta = w - reference`` quantised symmetrically per tensor to int8 with a
    float32 scale under ``name + SCALE_SUFFIX``. Non-finite weights stay detectable: their scale
    is NaN, so the decoded tensor is NaN. Integer arrays pass through unchanged.
    """
    _check_codec(codec)
    out: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        array = np.asarray(value)
        if not is_trained(array):
            out[name] = array.copy()
        elif codec == "none":
            out[name] = array.astype(np.float32)
        elif codec == "fp16":
            out[name] = array.astype(np.float16)
        else:
            ref = _need_reference(reference, name)
            if ref.shape != array.shape:
                raise ValueError(f"int8-delta: {name!r} has shape {array.shape}, ref {ref.shape}")
            delta = array.astype(np.float64) - ref.astype(np.float64)
            peak = float(np.max(np.abs(delta))) if delta.size else 0.0
            if not np.isfinite(peak):
                out[name] = np.zeros(array.shape, dtype=np.int8)
                out[name + SCALE_SUFFIX] = np.array([np.nan], dtype=np.float32)
                continue
            scale = peak / 127.0 if peak > 0 else 1.0
            quantised = np.clip(np.rint(delta / scale), -127, 127).astype(np.int8)
            out[name] = quantised
            out[name + SCALE_SUFFIX] = np.array([scale], dtype=np.float32)
    return out


def decode(
    payload: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None,
    codec: str,
) -> dict[str, np.ndarray]:
    """Undo :func:`encode`: float32 weights (integer arrays unchanged), keyed by parameter name.

    Raises ``ValueError`` naming the tensor when the payload does not fit the codec (missing
    scale, wrong dtype or shape against the reference).
    """
    _check_codec(codec)
    out: dict[str, np.ndarray] = {}
    for name, value in payload.items():
        if name.endswith(SCALE_SUFFIX):
            if codec != "int8-delta":
                raise ValueError(f"codec {codec}: unexpected scale array {name!r}")
            if name[: -len(SCALE_SUFFIX)] not in payload:
                raise ValueError(f"int8-delta: scale {name!r} without its tensor")
            continue
        array = np.asarray(value)
        scale_name = name + SCALE_SUFFIX
        if codec == "int8-delta" and scale_name in payload:
            if array.dtype != np.int8:
                raise ValueError(f"int8-delta: {name!r} is {array.dtype}, expected int8")
            ref = _need_reference(reference, name)
            if ref.shape != array.shape:
                raise ValueError(f"int8-delta: {name!r} has shape {array.shape}, ref {ref.shape}")
            scale = np.asarray(payload[scale_name], dtype=np.float64).reshape(-1)
            if scale.shape != (1,):
                raise ValueError(f"int8-delta: scale {scale_name!r} must hold one value")
            delta = array.astype(np.float64) * scale[0]
            out[name] = (ref.astype(np.float64) + delta).astype(np.float32)
        elif is_trained(array):
            if codec == "int8-delta":
                raise ValueError(f"int8-delta: floating tensor {name!r} has no {SCALE_SUFFIX}")
            out[name] = array.astype(np.float32)
        else:
            out[name] = array.copy()
    return out


def payload_bytes(payload: Mapping[str, np.ndarray]) -> int:
    """Bytes of array data in a payload (what the codec saves; record framing not counted)."""
    return int(sum(np.asarray(value).nbytes for value in payload.values()))
