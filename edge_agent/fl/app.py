"""The device's Flower ClientApp: train and evaluate the deployed student on reviewed cases.

Node config (``flower-supernode --node-config``): ``root`` (device root, required), ``site``
(a name for logs), ``threads`` (torch threads for training, default 2).

Under Flower's simulation runtime a node has only ``partition-id`` / ``num-partitions``: the
ClientApp then trains, through the same path, on the small device root the server's rehearsal
prepared for that partition under run config ``sim-dir`` (:mod:`edge_agent.fl.simulated`).

Extra Flower mods: ``FOVEA_FL_CLIENT_MODS`` in the SuperNode's environment names mods
(``module:function``, comma-separated) wrapped around every message, outermost first. The
end-to-end tests poison replies this way (``tests/e2e/fl_fault_mod.py``); nothing of that
lives here.

Client-side DP: when the round config carries Flower's ``clipping_norm`` (server wrapper
``DifferentialPrivacyClientSideFixedClipping``), Flower's ``fixedclipping_mod`` clips the reply;
it needs codec ``none`` or ``fp16`` (the reply must keep the sent arrays' names).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod

from edge_agent.fl.device import load_deployed, load_reviewed
from edge_agent.fl.local import Declined, evaluate_local, set_weights, train_local
from edge_agent.fl.priority import BusyFile, lower_priority, pause_while_busy
from edge_agent.fl.protocol import (
    ARRAYS,
    CONFIG,
    M_BYTES_SENT,
    M_DECLINED,
    M_NUM_EXAMPLES,
    METRICS,
    S_REASON,
    S_SITE,
    STATUS,
    RoundConfig,
    encode,
    is_trained,
    payload_bytes,
)
from edge_agent.fl.simulated import SimulatedSite, is_simulated, prepared_root

__all__ = ["MODS_ENV", "app", "declined_content", "extra_mods", "node_settings"]

MODS_ENV = "FOVEA_FL_CLIENT_MODS"
_CLIPPING_NORM = "clipping_norm"  # flwr.supercore.differential_privacy.KEY_CLIPPING_NORM

log = logging.getLogger(__name__)


def extra_mods(spec: str | None = None) -> list[Mod]:
    """The mods ``spec`` names (default: ``$FOVEA_FL_CLIENT_MODS``), each ``module:function``."""
    spec = os.environ.get(MODS_ENV, "") if spec is None else spec
    mods: list[Mod] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        module, sep, name = item.partition(":")
        if not sep or not module or not name:
            raise ValueError(f"{MODS_ENV}: {item!r} is not module:function")
        try:
            mod = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{MODS_ENV}: cannot load {item!r}: {exc}") from exc
        log.warning("extra Flower mod %s wraps every message (%s)", item, MODS_ENV)
        mods.append(mod)
    return mods


app = ClientApp(mods=extra_mods())


def node_settings(node_config: dict[str, Any]) -> tuple[Path, str, int]:
    """(root, site, threads) from the node config; ``ValueError`` says what is wrong."""
    if "root" not in node_config:
        raise ValueError(
            "node config has no 'root': start the SuperNode with --node-config "
            "'root=\"/path/to/device-root\"' (fovea-agent node does)"
        )
    root = Path(str(node_config["root"]))
    site = str(node_config.get("site", root.name))
    threads = int(node_config.get("threads", 2))
    return root, site, threads


def _site_settings(context: Context) -> tuple[Path, str, int]:
    """:func:`node_settings`, or a simulated node's site (one thread)."""
    node_config = dict(context.node_config)
    if is_simulated(node_config):
        site = SimulatedSite.from_context(node_config, dict(context.run_config))
        return prepared_root(site), site.name, 1
    return node_settings(node_config)


def declined_content(reason: str) -> RecordDict:
    """A reply that sits the round out: ``declined = 1``, no examples, and the reason."""
    return RecordDict(
        {
            METRICS: MetricRecord({M_DECLINED: 1, M_NUM_EXAMPLES: 0}),
            STATUS: ConfigRecord({S_REASON: reason}),
        }
    )


def _dp_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's client-side clipping, only for rounds whose config carries a clipping norm.

    The mod adds the clipped update to the sent float32 arrays, so an fp16 reply comes back
    float32: it is cast back to float16 so the reply keeps the codec the server expects.
    """
    config = _config(msg)
    if _CLIPPING_NORM not in config:
        return call_next(msg, context)
    out = fixedclipping_mod(msg, context, call_next)
    if out.has_error() or _round_config(msg).codec != "fp16" or ARRAYS not in out.content:
        return out
    record = out.content.array_records[ARRAYS]
    out.content[ARRAYS] = ArrayRecord(
        {
            name: Array(np.asarray(value, order="C").astype(np.float16))
            if is_trained(value)
            else Array(np.asarray(value, order="C"))
            for name, value in ((k, record[k].numpy()) for k in record)
        }
    )
    return out


def _metric_record(metrics: dict[str, float]) -> MetricRecord:
    values: dict[str, int | float | list[int] | list[float]] = dict(metrics)
    return MetricRecord(values)


def _arrays(msg: Message) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in msg.content.array_records[ARRAYS].items()}


def _config(msg: Message) -> dict[str, Any]:
    record = msg.content.config_records.get(CONFIG)
    return dict(record) if record is not None else {}


def _round_config(msg: Message) -> RoundConfig:
    return RoundConfig.from_config(_config(msg))


def _reply_order(
    weights: dict[str, np.ndarray], received: dict[str, np.ndarray], *, clipped: bool
) -> dict[str, np.ndarray]:
    """The reply's weights in the order the server sent them (``fixedclipping_mod`` compares
    the key lists, order included). Under client-side clipping the integer buffers
    (``num_batches_tracked``) echo the received ones: the server keeps its own anyway, and
    their counts must not count in the clipped update's norm."""
    missing = sorted(set(received) - set(weights))
    if missing:
        raise ValueError(f"trained weights lack {len(missing)} received arrays, e.g. {missing[0]}")
    out = {}
    for name, value in received.items():
        out[name] = value if clipped and not is_trained(np.asarray(value)) else weights[name]
    out.update({k: v for k, v in weights.items() if k not in received})
    return out


_lowered = False


def _lower_once(threads: int) -> None:
    global _lowered
    if not _lowered:
        lower_priority(threads=threads)
        _lowered = True


@app.train(mods=[_dp_when_asked])
def train(msg: Message, context: Context) -> Message:
    """Train the deployed student from the round's global weights; reply arrays + metrics."""
    root, site, threads = _site_settings(context)
    config = _round_config(msg)
    global_weights = _arrays(msg)
    try:
        _lower_once(threads)
        model, meta = load_deployed(root)
        teacher, _ = load_deployed(root)
        cases = load_reviewed(root, meta)
        busy = BusyFile.for_root(root)
        weights, metrics = train_local(
            model,
            global_weights,
            cases,
            config,
            teacher=teacher,
            pause=lambda: pause_while_busy(busy),
        )
    except Declined as exc:
        log.info("site %s declines round %d: %s", site, config.server_round, exc)
        return Message(declined_content(str(exc)), reply_to=msg)
    weights = _reply_order(weights, global_weights, clipped=_CLIPPING_NORM in _config(msg))
    payload = encode(weights, global_weights, config.codec)
    metrics[M_BYTES_SENT] = float(payload_bytes(payload))
    metrics[M_DECLINED] = 0.0
    log.info("site %s round %d: %s", site, config.server_round, metrics)
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({k: Array(np.array(v, order="C")) for k, v in payload.items()}),
            METRICS: _metric_record(metrics),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global weights, and the deployed model, on this site's held-out share."""
    root, site, threads = _site_settings(context)
    config = _round_config(msg)
    try:
        _lower_once(threads)
        model, meta = load_deployed(root)
        cases = load_reviewed(root, meta)
        if len(cases) < config.min_cases:
            raise Declined(f"{len(cases)} reviewed cases, fewer than min-cases={config.min_cases}")
        _, heldout = cases.split(config.heldout_fraction)
        if len(heldout) == 0:
            raise Declined("no held-out cases to evaluate on")
        deployed = evaluate_local(model, heldout)
        set_weights(model, _arrays(msg))
        metrics = evaluate_local(model, heldout, site_point=True)  # its own threshold too
    except Declined as exc:
        log.info("site %s declines evaluation: %s", site, exc)
        return Message(declined_content(str(exc)), reply_to=msg)
    metrics[M_NUM_EXAMPLES] = metrics["eval-num-examples"]
    metrics.update({f"deployed-{k}": v for k, v in deployed.items() if k.startswith("eval-")})
    metrics[M_DECLINED] = 0.0
    content = RecordDict({METRICS: _metric_record(metrics), STATUS: ConfigRecord({S_SITE: site})})
    return Message(content, reply_to=msg)
