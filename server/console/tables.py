"""Rich tables the commands and the demo both print: the fleet, a rollout, a federation's status."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from deploy.fleet import Device, Rollout
from server.federation import Registry


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    s = time.time() - t
    return (
        f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"
    )


def print_devices(devices: list[Device], out: Console) -> None:
    """The fleet table: one row per device."""
    table = Table(title=f"fleet: {len(devices)} device(s)")
    for col in ("host", "site", "hardware", "agent", "model", "backend", "status", "last seen"):
        table.add_column(col)
    colours = {"ready": "green", "not ready": "yellow", "unreachable": "red"}
    for d in devices:
        model = f"{d.model_name} v{d.model_version}" if d.model_name else "-"
        status = f"[{colours.get(d.status, 'white')}]{d.status}[/]"
        table.add_row(
            d.host, d.site or "-", d.hardware or "-", d.agent_version or "-", model,
            f"{d.backend} {d.precision}" if d.backend else "-", status, _ago(d.last_seen),
        )  # fmt: skip
    out.print(table)
    for d in devices:
        if d.error:
            out.print(f"[yellow]{d.host}[/yellow]: {d.error}", soft_wrap=True)


def print_rollout(r: Rollout, out: Console) -> None:
    """One rollout's per-host results and timings, and its verdict."""
    seconds = f"{r.seconds:.1f}s" if r.seconds is not None else "running"
    table = Table(title=f"rollout {r.id}: {r.kind} {r.target_version} ({seconds})")
    for col in ("host", "stage", "result", "from", "to", "seconds", "steps (s)"):
        table.add_column(col)
    for h in r.hosts:
        steps = " ".join(f"{k}={v:.1f}" for k, v in h.steps.items())
        table.add_row(
            h.host, h.stage, h.result, h.from_version or "-", h.to_version or "-",
            f"{h.seconds:.1f}", steps,
        )  # fmt: skip
    out.print(table)
    for h in r.hosts:
        if h.error:
            out.print(f"[yellow]{h.host}[/yellow]: {h.error}", soft_wrap=True)
    colour = "green" if r.status == "succeeded" else "red"
    out.print(f"[{colour}]{r.summary}[/{colour}]  (recorded as rollout {r.id})")


def status_view(registry: Registry, num_rounds: int | None = None) -> Group:
    """Rounds (counts, weighted metrics), rejected updates and decisions as rich tables."""
    rounds = Table(title="rounds")
    for col in ("round", "status", "sampled", "replied", "accepted", "train loss",
                "site acc", "held-out acc", "held-out sens", "s"):  # fmt: skip
        rounds.add_column(col, justify="right" if col != "status" else "left")
    for r in registry.rounds():

        def f(m: Any, k: str, scale: float = 1.0) -> str:
            return f"{m[k] * scale:.2f}" if k in m else "-"

        rounds.add_row(
            str(r.round), r.status + (f" ({r.note})" if r.note else ""), str(r.sampled),
            str(r.replied), str(r.accepted), f(r.train_metrics, "train-loss"),
            f(r.eval_metrics, "eval-accuracy", 100.0), f(r.server_metrics, "accuracy"),
            f(r.server_metrics, "referable_sensitivity"), f"{r.ended - r.started:.1f}",
        )  # fmt: skip
    nodes = Table(title="nodes and rejected updates")
    for col in ("round", "phase", "node", "outcome", "reason"):
        nodes.add_column(col)
    meta = registry.meta()
    names = dict(meta.get("sites") or {})
    for rnd, p in registry.participants():
        if p.outcome != "accepted":
            node = str(p.node_id)
            shown = f"{names[node]} ({node})" if node in names else node
            nodes.add_row(str(rnd), p.phase, shown, p.outcome, p.reason)
    parts: list[Any] = [rounds, nodes]
    head = f"status: {meta.get('status', 'not started')}"
    if num_rounds:
        head += f" ({len([r for r in registry.rounds() if r.round > 0])}/{num_rounds} rounds)"
    parts.insert(0, head)
    for d in registry.decisions():
        verdict = "[green]promoted[/green]" if d.promoted else "[yellow]kept deployed[/yellow]"
        where = f" -> {d.bundle} (v{d.version})" if d.bundle else ""
        parts.append(f"decision after round {d.round}: {verdict}{where}: {d.reason}")
    return Group(*parts)
