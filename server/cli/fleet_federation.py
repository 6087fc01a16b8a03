"""What ``fovea fleet serve`` reads from the federation: each run's rounds and decisions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from deploy.fleet import DecisionView, FederationRun, RoundView, describe


def federation_run(path: Path) -> FederationRun:
    """One federation registry (``registry.db``) as the fleet page shows it."""
    from server.federation import Registry

    try:
        registry = Registry(path)
        rounds, decisions = registry.rounds(), registry.decisions()
    except (sqlite3.Error, ValueError, OSError) as exc:
        return FederationRun(str(path.parent), error=f"{path} cannot be read: {exc}")
    return FederationRun(
        str(path.parent),
        rounds=[
            RoundView(
                round=r.round,
                status=r.status,
                accepted=r.accepted,
                replied=r.replied,
                sampled=r.sampled,
                held_out=r.server_metrics.get("accuracy"),
                note=r.note,
            )
            for r in rounds
        ],
        decisions=[
            DecisionView(
                round=d.round,
                promoted=d.promoted,
                reason=d.reason,
                version=d.version,
                created=d.created or None,
                per_site=[f"{site}: {describe(v)}" for site, v in d.per_site.items()],
            )
            for d in decisions
        ],
    )


def federation_runs(folder: Path) -> list[FederationRun]:
    """Every federation run (a folder holding ``registry.db``) at or under ``folder``."""
    if not folder.is_dir():
        return []
    return [federation_run(p) for p in sorted(folder.rglob("registry.db"))]


__all__ = ["federation_run", "federation_runs"]
