"""``fovea fleet threshold``: the referral thresholds devices propose from their reviews, who
approves them (an admin, or the fleet policy at each poll) and what is pending."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

import typer

from deploy import fleet  # its snapshots() function, not the module of that name
from deploy.fleet import (
    InventoryError,
    ThresholdPolicy,
    Verdict,
    approve_threshold,
    set_threshold_policy,
    threshold_policy,
)
from server.cli.fleet_common import DEFAULT_DB, Db, console, fail, inventory_of

thresholds_app = typer.Typer(
    no_args_is_help=True,
    help="Per-site referral thresholds: approve a device's proposal, set the fleet policy.",
)


@thresholds_app.command("approve")
def approve_command(
    host: Annotated[str, typer.Argument(help="the device's name in the fleet")],
    db: Db = DEFAULT_DB,
    reason: Annotated[str, typer.Option(help="kept in the device's audit entry")] = (
        "approved by an admin (fovea fleet threshold approve)"
    ),
) -> None:
    """Apply HOST's proposed referral threshold (from its reviewed cases; audited there)."""
    try:
        body = asyncio.run(approve_threshold(inventory_of(db), host, reason))
    except (InventoryError, ConnectionError) as exc:
        raise fail(str(exc)) from None
    site = body.get("site_threshold") or {}
    console.print(
        f"{host}: screening at {site.get('threshold')} (the bundle's: "
        f"{site.get('bundle_threshold')}); run `fovea fleet poll` to record it"
    )


@thresholds_app.command("policy")
def policy_command(
    db: Db = DEFAULT_DB,
    auto: Annotated[
        bool | None,
        typer.Option("--auto/--manual", help="approve proposals at each poll, or leave them"),
    ] = None,
    max_shift: Annotated[
        float | None, typer.Option(help="largest threshold change approved without an admin")
    ] = None,
) -> None:
    """Show the fleet's threshold policy, or change it (--auto/--manual, --max-shift)."""
    inventory = inventory_of(db)
    policy = threshold_policy(inventory.path)
    if auto is not None or max_shift is not None:
        try:
            policy = ThresholdPolicy(
                auto_approve=policy.auto_approve if auto is None else auto,
                max_shift=policy.max_shift if max_shift is None else max_shift,
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
        set_threshold_policy(inventory.path, policy)
    console.print(f"threshold policy: {policy.describe()}")


@thresholds_app.command("list")
def list_command(db: Db = DEFAULT_DB) -> None:
    """Each device's threshold and pending proposal, from its last poll."""
    inventory = inventory_of(db)
    kept = fleet.snapshots(inventory.path)
    for device in inventory.devices():
        body = kept[device.host].body if device.host in kept else {}
        site = body.get("site_threshold") or {}
        if not site:
            console.print(f"{device.host}: no threshold status (not polled, or an older agent)")
            continue
        point = site.get("point") or {}
        pending = [p for p in body.get("threshold_proposals") or [] if isinstance(p, dict)]
        if pending:
            p = pending[0]
            what = (
                f"proposes {p.get('threshold')} (sensitivity {p.get('sensitivity')}, 95% CI "
                f"{p.get('interval')}, {p.get('referable_reviews')} referable reviews)"
            )
        else:
            what = f"no proposal ({point.get('needed', 0)} more referable reviews needed)"
        console.print(f"{device.host}: screening at {site.get('threshold')}; {what}")


def print_verdicts(verdicts: Sequence[Verdict]) -> None:
    """What the fleet policy did with the pending proposals a poll found."""
    for v in verdicts:
        change = f"{v.current:.4f} -> {v.proposed:.4f}"
        if v.error:
            console.print(f"[red]{v.host}[/red]: threshold {change} not applied: {v.error}")
        elif v.approve:
            console.print(f"{v.host}: threshold {change} applied ({v.reason})")
        else:
            console.print(f"{v.host}: threshold {change} pending: {v.reason}")
