"""Federated adaptation acceptance (issue 6), with in-process rounds over the real plain functions.

A deployed student (64 px resnet-student, 12 epochs on sites a, b and c, cached under
``.fovea/bench/federation``) is served by three devices holding 1000 reviewed cases each of sites
a, b and d (site d: a different camera, blurrier and lower resolution, never trained on; 40% of
each device's cases are its held-out share). Rounds run the device code
(``edge_agent.fl.local.train_local``: FedProx, distillation from the deployed model and the
class-balanced loss; the codecs of ``edge_agent.fl.protocol``) and the server code
(``server.federation.validation.screen_updates``, ``strategies.aggregate_updates``) without
Flower's transport. Reported:

1. adaptation: site d's accuracy and referable sensitivity (its local held-out share), deployed
   vs adapted, and the held-out site e (no device has it), which must drop <= 0.5 points;
2. bytes per client per round for each codec, and the accuracy each reaches;
3. rounds to a target accuracy (mean over the devices' held-out shares), FedAvg vs FedProx; the
   target is 95% of the way from the deployed model to the best round either reached.

``python -m benchmarks.federation_acceptance`` (``--quick`` for a smoke-sized run).
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

DEVICE_SITES = ("site-a", "site-b", "site-d")
TRAIN_SITES = ("site-a", "site-b", "site-c")
ADAPT_SITE = "site-d"
HELDOUT_SITE = "site-e"


@dataclass(frozen=True)
class Setup:
    """Sizes of the benchmark."""

    size: int = 64
    width: int = 8
    train_per_site: int = 1500
    device_cases: int = 1000
    heldout_cases: int = 600
    deploy_epochs: int = 12
    deploy_lr: float = 0.03
    rounds: int = 6
    local_epochs: int = 2
    lr: float = 0.005
    mu: float = 0.01
    alpha: float = 0.5
    temperature: float = 2.0
    class_balance: float = 0.5
    heldout_fraction: float = 0.4
    target_share: float = 0.95
    seed: int = 0


CACHE = Path(".fovea/bench/federation")
"""Where the deployed model is kept between runs (keyed by the settings that shape it)."""


def _cases(site: str, n: int, size: int, seed: int, spec: Any = None) -> Any:
    from edge_agent.fl import LocalCases
    from models import PreprocessSpec
    from models.synth import SITES, generate

    data = generate(SITES[site], int(n * 1.2) + 8, size=size, seed=seed)
    keep = np.flatnonzero(data.grade >= 0)[:n]
    images = data.images[keep]
    spec = spec or PreprocessSpec.fitted(images)
    return LocalCases(images, data.grade[keep].astype(np.int64), spec)


def _deploy_key(setup: Setup) -> str:
    fields = ("size", "width", "train_per_site", "deploy_epochs", "deploy_lr", "seed")
    return "-".join(f"{f}{getattr(setup, f)}" for f in fields)


def deployed_model(setup: Setup, cache: Path | None = CACHE) -> tuple[Any, Any]:
    """The student every device serves: trained on the pooled training sites (no site d, no
    site e) with plain cross-entropy and a cosine learning rate, cached under ``cache``."""
    import torch
    from safetensors.torch import load_file, save_file

    from edge_agent.fl import LocalCases, RoundConfig, get_weights, set_weights, train_local
    from models import PreprocessSpec
    from models.nets import build_model

    torch.manual_seed(setup.seed)
    model = build_model("resnet-student", {"width": setup.width})
    stem = cache / _deploy_key(setup) if cache is not None else None
    if stem is not None and stem.with_suffix(".safetensors").is_file():
        model.load_state_dict(load_file(str(stem.with_suffix(".safetensors"))))
        spec = PreprocessSpec.model_validate_json(stem.with_suffix(".json").read_text())
        print(f"reusing the deployed model {stem}.safetensors", flush=True)
        return model, spec
    parts = [_cases(s, setup.train_per_site, setup.size, setup.seed + i)
             for i, s in enumerate(TRAIN_SITES)]  # fmt: skip
    images = np.concatenate([p.images for p in parts])
    spec = PreprocessSpec.fitted(images)
    pooled = LocalCases(images, np.concatenate([p.grades for p in parts]), spec)
    for epoch in range(setup.deploy_epochs):  # one call per epoch: a cosine step each
        lr = setup.deploy_lr * 0.5 * (1 + np.cos(np.pi * epoch / setup.deploy_epochs))
        config = RoundConfig(server_round=epoch, local_epochs=1, lr=max(lr, 1e-4),
                             proximal_mu=0.0, distill_alpha=0.0, batch_size=32,
                             heldout_fraction=0.0, class_balance=0.0)  # fmt: skip
        weights, _ = train_local(model, get_weights(model), pooled, config)
        set_weights(model, weights)
    if stem is not None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(stem.with_suffix(".safetensors")))  # fmt: skip
        stem.with_suffix(".json").write_text(spec.model_dump_json())
    return model, spec


@dataclass
class RoundLog:
    """One round: per-device held-out metrics of the global model, and bytes sent."""

    round: int
    sites: dict[str, dict[str, float]]
    heldout: dict[str, float]
    bytes_per_client: float
    rejected: int
    seconds: float


def _evaluate(model: Any, weights: dict[str, np.ndarray], cases: Any) -> dict[str, float]:
    from edge_agent.fl import evaluate_local, set_weights

    probe = copy.deepcopy(model)
    set_weights(probe, weights)
    m = evaluate_local(probe, cases)
    return {
        "accuracy": 100 * m["eval-accuracy"],
        "sensitivity": 100 * m["eval-referable-sensitivity"],
        "n": m["eval-num-examples"],
    }


def federate(
    setup: Setup, deployed: Any, devices: dict[str, Any], heldout: Any, strategy: str, codec: str
) -> list[RoundLog]:
    """Rounds of the real client/server functions; round 0 is the deployed model."""
    import torch

    from edge_agent.fl import RoundConfig, decode, encode, get_weights, payload_bytes, train_local
    from server.federation import aggregate_updates, decode_update, screen_updates

    torch.manual_seed(setup.seed + 1)
    global_w = get_weights(deployed)
    heldout_share = {s: c.split(setup.heldout_fraction)[1] for s, c in devices.items()}

    def record(rnd: int, w: dict[str, np.ndarray], nbytes: float, rej: int, t: float) -> RoundLog:
        sites = {s: _evaluate(deployed, w, heldout_share[s]) for s in devices}
        return RoundLog(rnd, sites, _evaluate(deployed, w, heldout), nbytes, rej, t)

    history = [record(0, global_w, 0.0, 0, 0.0)]
    teacher = copy.deepcopy(deployed)  # train_local freezes it; the template stays trainable
    mu = setup.mu if strategy == "fedprox" else 0.0
    for rnd in range(1, setup.rounds + 1):
        started = time.perf_counter()
        config = RoundConfig(server_round=rnd, local_epochs=setup.local_epochs, lr=setup.lr,
                             proximal_mu=mu, distill_alpha=setup.alpha,
                             distill_temperature=setup.temperature, batch_size=16,
                             min_cases=16, codec=codec, heldout_fraction=setup.heldout_fraction,
                             class_balance=setup.class_balance)  # fmt: skip
        candidates, sent = [], []
        for i, cases in enumerate(devices.values()):
            model = copy.deepcopy(deployed)
            weights, metrics = train_local(model, global_w, cases, config, teacher=teacher)
            payload = encode(weights, global_w, codec)
            sent.append(payload_bytes(payload))
            assert decode(payload, global_w, codec).keys() == weights.keys()
            candidates.append(decode_update(i, payload, metrics["num-examples"], global_w, codec))
        verdicts = screen_updates(candidates, global_w, 3.0)
        good = [c for c, v in zip(candidates, verdicts, strict=True) if v.accepted and c.weights]
        if len(good) >= 2:
            merged = aggregate_updates(
                strategy, [c.weights for c in good if c.weights], [c.num_examples for c in good]
            )
            global_w = {**global_w, **{k: v for k, v in merged.items()
                                       if np.issubdtype(v.dtype, np.floating)}}  # fmt: skip
        elapsed = time.perf_counter() - started
        history.append(record(rnd, global_w, float(np.mean(sent)), len(candidates) - len(good),
                              elapsed))  # fmt: skip
    return history


def _mean_acc(log: RoundLog) -> float:
    total = sum(m["n"] for m in log.sites.values())
    return sum(m["accuracy"] * m["n"] for m in log.sites.values()) / total


def rounds_to(history: list[RoundLog], target: float) -> int | None:
    """The first round whose device-weighted held-out accuracy reaches ``target``."""
    return next((h.round for h in history if _mean_acc(h) >= target), None)


def run(setup: Setup, cache: Path | None = CACHE) -> dict[str, Any]:
    """Every measurement, as a JSON-able dict."""
    deployed, spec = deployed_model(setup, cache)
    devices = {s: _cases(s, setup.device_cases, setup.size, 100 + i, spec)
               for i, s in enumerate(DEVICE_SITES)}  # fmt: skip
    heldout = _cases(HELDOUT_SITE, setup.heldout_cases, setup.size, 200, spec)
    runs: dict[str, list[RoundLog]] = {}
    for strategy, codec in (("fedprox", "none"), ("fedprox", "fp16"),
                            ("fedprox", "int8-delta"), ("fedavg", "none")):  # fmt: skip
        print(f"== {strategy} {codec}", flush=True)
        runs[f"{strategy}/{codec}"] = federate(setup, deployed, devices, heldout, strategy, codec)
    main = runs["fedprox/none"]
    before, after = main[0], main[-1]
    d_acc = after.sites[ADAPT_SITE]["accuracy"] - before.sites[ADAPT_SITE]["accuracy"]
    d_sens = after.sites[ADAPT_SITE]["sensitivity"] - before.sites[ADAPT_SITE]["sensitivity"]
    e_drop = before.heldout["accuracy"] - after.heldout["accuracy"]
    start = _mean_acc(main[0])
    best = max(_mean_acc(h) for k in ("fedprox/none", "fedavg/none") for h in runs[k])
    target = start + setup.target_share * (best - start)
    return {
        "setup": setup.__dict__,
        "adaptation": {
            "site": ADAPT_SITE, "heldout_site": HELDOUT_SITE,
            "deployed": before.sites[ADAPT_SITE], "adapted": after.sites[ADAPT_SITE],
            "heldout_deployed": before.heldout, "heldout_adapted": after.heldout,
            "accuracy_gain": d_acc, "sensitivity_gain": d_sens, "heldout_drop": e_drop,
            "accepted": d_acc > 0 and d_sens > 0 and e_drop <= 0.5,
        },
        "codecs": {k.split("/")[1]: {"bytes_per_client_round": runs[k][-1].bytes_per_client,
                                     "site_d_accuracy": runs[k][-1].sites[ADAPT_SITE]["accuracy"],
                                     "mean_accuracy": _mean_acc(runs[k][-1]),
                                     "heldout_accuracy": runs[k][-1].heldout["accuracy"]}
                   for k in ("fedprox/none", "fedprox/fp16", "fedprox/int8-delta")},
        "rounds_to_target": {"target_mean_accuracy": target, "start": start, "best": best,
                             "target_share_of_best_gain": setup.target_share,
                             "fedavg": rounds_to(runs["fedavg/none"], target),
                             "fedprox": rounds_to(runs["fedprox/none"], target),
                             "fedavg_curve": [_mean_acc(h) for h in runs["fedavg/none"]],
                             "fedprox_curve": [_mean_acc(h) for h in runs["fedprox/none"]]},
        "seconds_per_round": float(np.mean([h.seconds for h in main[1:]])),
    }  # fmt: skip


def table(result: dict[str, Any]) -> list[list[str]]:
    """The Markdown rows of the result."""
    a = result["adaptation"]
    rows = [["measure", "deployed", "after rounds", "change"]]
    for key, label in (("accuracy", "accuracy"), ("sensitivity", "referable sensitivity")):
        rows.append([f"{a['site']} {label}", f"{a['deployed'][key]:.1f}",
                     f"{a['adapted'][key]:.1f}",
                     f"{a['adapted'][key] - a['deployed'][key]:+.1f}"])  # fmt: skip
        rows.append([f"{a['heldout_site']} (held out) {label}", f"{a['heldout_deployed'][key]:.1f}",
                     f"{a['heldout_adapted'][key]:.1f}",
                     f"{a['heldout_adapted'][key] - a['heldout_deployed'][key]:+.1f}"])  # fmt: skip
    rows.append([f"acceptance ({a['site']} accuracy and sensitivity up, held-out drop <= 0.5)",
                 "", "",
                 "met" if a["accepted"] else "NOT met"])  # fmt: skip
    for codec, c in result["codecs"].items():
        nbytes = f"{c['bytes_per_client_round']:,.0f}"
        rows.append([f"codec {codec}: bytes/client/round", "", nbytes,
                     f"site-d acc {c['site_d_accuracy']:.1f}, mean {c['mean_accuracy']:.1f}, "
                     f"held-out {c['heldout_accuracy']:.1f}"])  # fmt: skip
    r = result["rounds_to_target"]
    for name in ("fedavg", "fedprox"):
        rows.append([f"{name}: rounds to mean accuracy {r['target_mean_accuracy']:.1f}",
                     f"{r['start']:.1f}", str(r[name] if r[name] is not None else "not reached"),
                     " ".join(f"{v:.1f}" for v in r[f"{name}_curve"])])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write results/federation_acceptance.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: no spin-waits on a busy machine)"
    )
    parser.add_argument("--no-cache", action="store_true", help=f"do not use {CACHE}")
    args = parser.parse_args(argv)
    import torch

    from benchmarks.report import write

    torch.set_num_threads(args.threads)
    setup = Setup()
    if args.quick:
        setup = replace(setup, size=32, train_per_site=120, device_cases=80, heldout_cases=80,
                        deploy_epochs=1, rounds=2, local_epochs=1)  # fmt: skip
    if args.rounds:
        setup = replace(setup, rounds=args.rounds)
    started = time.perf_counter()
    result = run(setup, cache=None if args.no_cache else CACHE)
    result["seconds"] = time.perf_counter() - started
    write("federation_acceptance" + ("_quick" if args.quick else ""), result, table(result))


if __name__ == "__main__":
    main()
