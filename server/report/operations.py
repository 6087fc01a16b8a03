"""Report sections about the loop in the field: federated rounds, promotion, the fleet."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge_agent.store import SqliteOptions, connect
from server.report import figures
from server.report.html import Section, image, missing, num, paragraph, table
from server.report.sources import Workdir

__all__ = ["federation_section", "fleet_section", "promotion_section"]

_EVAL_ACCURACY = "eval-accuracy"


def _when(seconds: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else None


def _node_names(meta: dict[str, Any]) -> dict[int, str]:
    """Node id -> site name, where the run recorded it (meta ``sites``)."""
    sites = meta.get("sites")
    if not isinstance(sites, dict):
        return {}
    return {int(k): str(v) for k, v in sites.items() if str(k).lstrip("-").isdigit()}


def federation_section(work: Workdir) -> Section:
    """Each federated round: counts, loss, evaluation per site and on the held-out site."""
    from server.federation import Registry

    title = "Federated rounds per site"
    path = work.registry()
    if path is None:
        detail = f"no registry.db under {work.root / 'federation'}"
        return Section("federation", title, missing("federated rounds", detail))
    registry = Registry(path)
    rounds, meta = registry.rounds(), registry.meta()
    if not rounds:
        return Section("federation", title, missing("federated rounds", f"{path} has no rounds"))
    names = _node_names(meta)
    per_node: dict[str, dict[int, float]] = {}
    outcomes: dict[str, dict[int, str]] = {}
    for rnd, p in registry.participants():
        label = names.get(p.node_id, f"node {p.node_id}")
        if p.phase == "evaluate" and p.outcome == "accepted" and _EVAL_ACCURACY in p.metrics:
            per_node.setdefault(label, {})[rnd] = float(p.metrics[_EVAL_ACCURACY])
        if p.phase == "train":
            reason = f" ({p.reason})" if p.reason else ""
            outcomes.setdefault(label, {})[rnd] = p.outcome + reason
    held_out = {
        r.round: float(r.server_metrics["accuracy"])
        for r in rounds
        if "accuracy" in r.server_metrics
    }
    rows = [
        [
            r.round,
            r.status,
            f"{r.accepted}/{r.replied}/{r.sampled}",
            num(r.train_metrics.get("train-loss")),
            num(100 * r.eval_metrics[_EVAL_ACCURACY], 1)
            if _EVAL_ACCURACY in r.eval_metrics
            else None,
            num(r.server_metrics.get("accuracy"), 1),
            r.note,
        ]
        for r in rounds
    ]
    parts = [
        paragraph(
            f"Run {path.parent} ({meta.get('status', 'status unknown')}); round 0 "
            "evaluates the deployed model."
        )
    ]
    if per_node or held_out:
        parts.append(image(figures.federation_png(per_node, held_out), "accuracy per site"))
    parts.append(
        table(
            [
                "round",
                "status",
                "accepted/replied/sampled",
                "train loss",
                "sites accuracy %",
                "held-out accuracy %",
                "note",
            ],
            rows,
        )
    )
    if outcomes:
        trained = sorted({r.round for r in rounds if r.round > 0})
        grid = [[site, *(per.get(n) for n in trained)] for site, per in sorted(outcomes.items())]
        parts.append(paragraph("Each site's update per round:"))
        parts.append(table(["site", *(f"round {n}" for n in trained)], grid))
    parts += _adaptation(work.root / "federation" / "adaptation.json")
    return Section("federation", title, "\n".join(parts))


def _adaptation(path: Path) -> list[str]:
    """The demo's measurement of what the rounds bought at the clinic with a new camera."""
    try:
        result = json.loads(path.read_text())
        rows = [
            [name.replace("_", " "), num(m["deployed"], 1), num(m["candidate"], 1),
             num(m["difference"], 1), f"{m['interval'][0]:+.1f} to {m['interval'][1]:+.1f}"]
            for name, m in result["metrics"].items()
        ]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []  # not a demo run, or none measured
    about = (
        f"At {result['clinic']}, whose camera changed ({result['camera']}): the deployed and "
        f"the candidate weights on {result['images']:,} further images of that camera, with "
        "paired bootstrap 95% intervals of the change (points)."
    )
    header = ["metric", "deployed %", "candidate %", "change", "95% interval"]
    return [paragraph(about), table(header, rows)]


def promotion_section(work: Workdir) -> Section:
    """The last promotion decision: promoted or kept, why, and the numbers compared."""
    from server.federation import Registry

    title = "Promotion decision"
    path = work.registry()
    decisions = Registry(path).decisions() if path is not None else []
    if not decisions:
        where = path or work.root / "federation"
        return Section("promotion", title, missing("promotion", f"no decision recorded in {where}"))
    d = decisions[-1]
    verdict = "PROMOTED" if d.promoted else "KEPT the deployed model"
    css = "verdict ok" if d.promoted else "verdict kept"
    parts = [
        f'<p class="{css}">{verdict} after round {d.round}'
        + (f": bundle v{d.version}" if d.version is not None else "")
        + "</p>",
        paragraph(d.reason),
    ]
    keys = sorted(set(d.candidate) | set(d.deployed))
    if keys:
        rows = [[k, num(d.deployed.get(k), 2), num(d.candidate.get(k), 2)] for k in keys]
        parts.append(table(["held-out metric", "deployed", "candidate"], rows))
    if d.bundle:
        parts.append(paragraph(f"Signed bundle: {d.bundle}"))
    if len(decisions) > 1:
        parts.append(paragraph(f"{len(decisions) - 1} earlier decision(s) in {path}."))
    return Section("promotion", title, "\n".join(parts))


def _device_counts(root: Path) -> tuple[int | None, int | None]:
    """Screenings and reviews in a local device root's state.db."""
    db_path = root / "state.db"
    if not db_path.is_file():
        return None, None
    try:
        db = connect(db_path, SqliteOptions(read_only=True, busy_timeout_s=5))
        try:
            screened = db.execute("SELECT COUNT(*) FROM screenings").fetchone()[0]
            reviewed = db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return None, None
    return int(screened), int(reviewed)


def _drift(status: dict[str, Any] | None) -> str | None:
    """A device's drift at its last poll (its stored status answer), in words: its alerts, how
    many images were fine, or why it is not monitored; None for agents that report no drift."""
    drift = (status or {}).get("drift")
    if not isinstance(drift, dict):
        return None
    if drift.get("reference") is None:
        return str(drift.get("note") or "not monitored")
    alerts = [a for a in drift.get("alerts") or [] if isinstance(a, dict)]
    if not alerts:
        return f"no alert ({drift.get('images', 0)} images)"
    names = ", ".join(f"{a.get('statistic')} {a.get('direction')}" for a in alerts)
    return f"{len(alerts)} alert{'s' if len(alerts) > 1 else ''}: {names}"


def fleet_section(work: Workdir) -> Section:
    """Every device: site, status, model version and precision, cases, drift; recent rollouts."""
    from deploy import fleet  # its snapshots() function, not the module of that name
    from deploy.fleet import Inventory, InventoryError

    title = "Fleet"
    if not work.fleet_db.is_file():
        return Section("fleet", title, missing("flashing devices", f"{work.fleet_db} not found"))
    try:
        inventory = Inventory(work.fleet_db)
        devices, rollouts = inventory.devices(), inventory.rollouts(limit=5)
        statuses = {host: snap.body for host, snap in fleet.snapshots(work.fleet_db).items()}
    except (InventoryError, sqlite3.Error) as e:
        return Section("fleet", title, missing("fleet inventory", f"{work.fleet_db}: {e}"))
    if not devices:
        return Section("fleet", title, missing("flashing devices", "the inventory is empty"))
    rows = []
    for dev in devices:
        local = dev.transport.kind == "local"
        screened, reviewed = _device_counts(Path(dev.transport.root)) if local else (None, None)
        version = f"{dev.model_name or '?'} v{dev.model_version}" if dev.model_version else None
        rows.append(
            [
                dev.host,
                dev.site,
                dev.status,
                version,
                dev.precision,
                dev.backend,
                dev.agent_version,
                screened,
                reviewed,
                _drift(statuses.get(dev.host)),
                _when(dev.last_seen),
            ]
        )
    parts = [
        table(
            [
                "device",
                "site",
                "status",
                "model",
                "precision",
                "backend",
                "agent",
                "screened",
                "reviewed",
                "drift",
                "last seen",
            ],
            rows,
        )
    ]
    if rollouts:
        rows = [
            [r.id, r.kind, r.target_version, r.status, _when(r.started), r.summary]
            for r in rollouts
        ]
        parts.append(paragraph("Recent rollouts:"))
        parts.append(table(["id", "kind", "to version", "status", "started", "summary"], rows))
    return Section("fleet", title, "\n".join(parts))
