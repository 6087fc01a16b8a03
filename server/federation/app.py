"""The ServerApp: ``flwr run`` starts ``app``; ``run_federation`` does the work.

Each round is checkpointed into the run directory and recorded in its registry; a ServerApp
started again on the same run directory resumes after the last completed round. After the last
round the candidate is promoted to the next signed bundle, or the deployed model is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log as flwr_log

from server.federation.evaluation import HeldoutSet, check_task, evaluate_weights, load_heldout
from server.federation.promotion import PackageConfig, promote
from server.federation.provenance import ModelRef, last_validated, provenance_from_registry
from server.federation.registry import DecisionRecord, Registry, RoundRecord
from server.federation.rounds import NodesUnavailable, evaluate_phase, train_phase
from server.federation.settings import FederationSettings
from server.federation.state import RunState, load_state, save_state
from server.federation.strategies import make_strategy
from server.federation.weights import (
    bundle_version,
    load_weights,
    resolve_checkpoint,
    weights_digest,
)

__all__ = ["REGISTRY_FILE", "app", "run_federation"]

REGISTRY_FILE = "registry.db"
PLOT_FILE = "rounds.png"

app = ServerApp()


def _log(message: str) -> None:
    flwr_log(INFO, "[fovea] %s", message)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point: settings from the run config, then :func:`run_federation`."""
    settings = FederationSettings.from_run_config(dict(context.run_config))
    run_federation(grid, settings, log=_log)


def _heldout(settings: FederationSettings, log: Callable[[str], None]) -> HeldoutSet | None:
    path = settings.path("distill-config")
    if path is None:
        log("no distill-config: no held-out evaluation, and no promotion")
        return None
    return load_heldout(path, settings.heldout_limit)


def _package(settings: FederationSettings, ckpt: Path, run_dir: Path) -> PackageConfig | None:
    key, cfg = settings.path("signing-key"), settings.path("distill-config")
    if key is None or cfg is None:
        return None
    version = settings.bundle_version or (bundle_version(ckpt) or 0) + 1
    if version < 2 and not settings.bundle_version:
        raise ValueError(
            f"cannot tell the deployed bundle's version from {ckpt}; set run config "
            "'bundle-version' to the version the promoted bundle should carry"
        )
    return PackageConfig(cfg, key, version, run_dir / "bundles", settings.path("export-config"))


def run_federation(
    grid: Grid, settings: FederationSettings, *, log: Callable[[str], None] = _log
) -> RunState:
    """Run (or resume) the federation the settings describe; returns the final state."""
    run_dir = settings.path("run-dir")
    model = settings.path("model")
    assert run_dir is not None and model is not None
    ckpt = resolve_checkpoint(model)
    deployed = load_weights(ckpt)
    digest = weights_digest(deployed)
    registry = Registry(run_dir / REGISTRY_FILE)
    registry.set_meta("run_config", settings.to_run_config())
    registry.set_meta("model", str(ckpt))
    resumed = load_state(run_dir, digest)
    if resumed is None:
        weights = deployed
        state = RunState(
            round=0, model=str(ckpt), deployed_digest=digest, global_digest=digest,
            strategy=settings.strategy,
        )  # fmt: skip
    else:
        weights, state = resumed.weights, resumed.state
        log(f"resuming {run_dir} after round {state.round} of {settings.num_rounds}")
    heldout = _heldout(settings, log)
    if heldout is not None:
        from models.nets import read_meta

        check_task(heldout, read_meta(ckpt).task, str(settings.path("distill-config")))
    strategy = make_strategy(settings)
    registry.set_meta("status", "running")

    def server_metrics(w: dict) -> dict[str, float]:
        return evaluate_weights(ckpt, w, heldout.arrays) if heldout is not None else {}

    try:
        if state.round == 0 and not registry.rounds():
            started = time.time()
            base = evaluate_phase(grid, strategy, 0, weights, settings, log)
            _remember_sites(registry, base.sites)
            registry.record_round(
                RoundRecord(0, "baseline", started, time.time(), base.sampled, base.replied,
                            base.accepted, {}, base.metrics, server_metrics(weights), base.note),
                base.participants,
            )  # fmt: skip
            save_state(run_dir, state, weights, deployed)
        for rnd in range(state.round + 1, settings.num_rounds + 1):
            log(f"round {rnd}/{settings.num_rounds}")
            started = time.time()
            train = train_phase(grid, strategy, rnd, weights, settings, log)
            if train.weights is not None:
                weights = train.weights
            ev = evaluate_phase(grid, strategy, rnd, weights, settings, log)
            _remember_sites(registry, ev.sites)
            record = RoundRecord(
                rnd, train.status, started, time.time(), train.sampled, train.replied,
                train.accepted, train.metrics, ev.metrics, server_metrics(weights), train.note,
            )  # fmt: skip
            registry.record_round(record, train.participants + ev.participants)
            state = state.model_copy(
                update={
                    "round": rnd,
                    "global_digest": weights_digest(weights),
                    "history": [*state.history, {"round": rnd, "status": train.status,
                                                 "accepted": train.accepted, **train.metrics}],
                }
            )  # fmt: skip
            save_state(run_dir, state, weights, deployed)
            _plot(registry, run_dir, log)
    except NodesUnavailable as e:
        registry.set_meta("status", f"stalled: {e}")
        flwr_log(WARNING, "[fovea] %s; the run stops after round %d (resume later)", e, state.round)
        return state
    registry.set_meta("status", "rounds done")
    _decide(registry, settings, state, ckpt, weights, deployed, heldout, run_dir, log)
    return state


def _remember_sites(registry: Registry, sites: dict[int, str]) -> None:
    """Keep node id -> site name (meta ``sites``) so status, decisions and the report name
    sites, not node ids."""
    known = dict(registry.meta().get("sites") or {})
    merged = known | {str(node): site for node, site in sites.items()}
    if merged != known:
        registry.set_meta("sites", merged)


def _plot(registry: Registry, run_dir: Path, log: Callable[[str], None]) -> None:
    from server.federation.plots import plot_rounds

    try:
        plot_rounds(registry.rounds(), run_dir / PLOT_FILE)
    except Exception as e:  # a plot never stops a federation
        log(f"could not plot the rounds: {e}")


def _per_site(registry: Registry, last: int) -> dict[str, dict[str, dict[str, float]]]:
    names = dict(registry.meta().get("sites") or {})
    sites: dict[str, dict[str, dict[str, float]]] = {}
    for rnd, p in registry.participants():
        if p.phase == "evaluate" and p.outcome == "accepted" and rnd in (0, last):
            key = "deployed" if rnd == 0 else "candidate"
            name = names.get(str(p.node_id), f"node-{p.node_id}")
            sites.setdefault(name, {})[key] = dict(p.metrics)
    return sites


def _decide(
    registry: Registry,
    settings: FederationSettings,
    state: RunState,
    ckpt: Path,
    weights: dict,
    deployed: dict,
    heldout: HeldoutSet | None,
    run_dir: Path,
    log: Callable[[str], None],
) -> None:
    if any(d.round == state.round for d in registry.decisions()):
        log("this run's promotion was already decided")
        return
    empty: dict[str, float] = {}
    if not settings.promote:
        reason = "run config 'promote' is false: kept the deployed model"
    elif state.global_digest == state.deployed_digest:
        reason = "no round produced an aggregate: nothing to promote, kept the deployed model"
    elif heldout is None:
        reason = "no held-out set (run config 'distill-config' is empty): kept the deployed model"
    else:
        try:
            package = _package(settings, ckpt, run_dir)
            validated = last_validated(ckpt, settings.path("validated-model"), bundle_version(ckpt))
        except (ValueError, FileNotFoundError) as e:
            reason = f"kept the deployed model: {e}"
        else:
            reason = _promote(registry, settings, state, (ckpt, deployed), weights, heldout,
                              (package, validated), log)  # fmt: skip
            registry.set_meta("status", "finished")
            log(f"decision: {reason}")
            return
    registry.record_decision(DecisionRecord(state.round, False, reason, empty, empty))
    registry.set_meta("status", "finished")
    log(f"decision: {reason}")


def _promote(
    registry: Registry,
    settings: FederationSettings,
    state: RunState,
    deployed: tuple[Path, dict],
    weights: dict,
    heldout: HeldoutSet,
    how: tuple[PackageConfig | None, ModelRef],
    log: Callable[[str], None],
) -> str:
    """Gate the candidate against the deployed and the last validated model, promote it or
    keep the deployed one, and record the decision with its gate record and provenance."""
    ckpt, deployed_w = deployed
    package, validated = how
    if not any(v.get("digest") == validated.digest for v in registry.validations()):
        registry.record_validation(validated.model_dump(mode="json"))
    started = ModelRef(path=str(ckpt), digest=state.deployed_digest, version=bundle_version(ckpt))
    provenance = provenance_from_registry(
        registry, state.round, started, validated, settings.strategy
    )
    d = promote(
        weights, ckpt, heldout, settings.promotion_margin, _per_site(registry, state.round),
        package=package, deployed_weights=deployed_w, validated=validated,
        provenance=provenance, log=log,
    )  # fmt: skip
    registry.record_decision(
        DecisionRecord(state.round, d.promoted, d.reason, d.candidate, d.deployed, d.per_site,
                       str(d.bundle) if d.bundle else None, d.version, gate=d.gate,
                       provenance=d.provenance)
    )  # fmt: skip
    return d.reason
