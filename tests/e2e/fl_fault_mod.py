"""A test-only Flower mod that poisons a device's training reply, for the fault tests.

A SuperNode started with ``FOVEA_FL_CLIENT_MODS=fl_fault_mod:fault_mod`` (this directory on
``PYTHONPATH``) and node config ``fault = "nan" | "scale"`` replies with all-NaN weights, or with
its update boosted x100, so the end-to-end tests can prove the server rejects both. The reply is
decoded with the round's codec, poisoned, and encoded again, as a faulty device would send it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from edge_agent.fl import ARRAYS, CONFIG, RoundConfig, decode, encode

FAULTS = ("nan", "scale")
SCALE = 100.0


def poison(
    weights: dict[str, np.ndarray], reference: dict[str, np.ndarray], fault: str
) -> dict[str, np.ndarray]:
    """``nan``: every floating array NaN; ``scale``: the update from ``reference`` x100."""
    if fault not in FAULTS:
        raise ValueError(f"node config fault={fault!r}: use one of {', '.join(FAULTS)}")
    out = {}
    for name, value in weights.items():
        if not np.issubdtype(value.dtype, np.floating):
            out[name] = value
        elif fault == "nan":
            out[name] = np.full_like(value, np.nan)
        else:
            out[name] = (reference[name] + SCALE * (value - reference[name])).astype(value.dtype)
    return out


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Poison the training reply as node config ``fault`` says; pass everything else through."""
    reply = call_next(msg, context)
    fault = context.node_config.get("fault")
    if fault is None or reply.has_error() or ARRAYS not in reply.content.array_records:
        return reply
    records = msg.content.config_records.get(CONFIG)
    codec = RoundConfig.from_config(dict(records) if records is not None else {}).codec
    sent = {k: v.numpy() for k, v in msg.content.array_records[ARRAYS].items()}
    payload = {k: v.numpy() for k, v in reply.content.array_records[ARRAYS].items()}
    weights = decode(payload, sent, codec)
    poisoned = encode(poison(weights, sent, str(fault)), sent, codec)
    reply.content[ARRAYS] = ArrayRecord(
        {k: Array(np.array(v, order="C")) for k, v in poisoned.items()}
    )
    return reply
