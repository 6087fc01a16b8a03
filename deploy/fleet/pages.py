"""The fleet page's HTML: the sign-in form and the overview, rendered on the server.

No script and nothing fetched from elsewhere: the only other resource is ``/fleet.css`` from the
same server. Every value goes through ``_Html.text``, which hides the strings it was told are
secret (the devices' fleet tokens) and escapes the rest.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from deploy.fleet.inventory import Rollout
from deploy.fleet.overview import DeviceView, FederationRun, Overview

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
th, td { border: 1px solid #c9ced6; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
ul { margin: 0; padding-left: 1.1rem; }
.none { color: #6b7280; } .alert { color: #a40000; } .error { color: #a40000; }
.ok { color: #136b2f; } .muted { color: #6b7280; font-size: .9em; }
header form { display: inline; margin-left: 1rem; }
"""
_MIN_SECRET = 6  # shorter strings would hide ordinary words; fleet tokens are 43 characters


def when(seconds: float | None) -> str | None:
    """A UTC time stamp for the page, or None."""
    return None if not seconds else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class _Html:
    """Escapes values, hiding any secret string inside them."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted((s for s in secrets if len(s) >= _MIN_SECRET), key=len, reverse=True)

    def text(self, value: object, empty: str = "—") -> str:
        """``value`` as escaped text (``empty`` when it is None or blank)."""
        if value is None or str(value).strip() == "":
            return f'<span class="none">{html.escape(empty)}</span>'
        raw = str(value)
        for secret in self._secrets:
            raw = raw.replace(secret, "[hidden]")
        return html.escape(raw, quote=True)

    def attr(self, value: str) -> str:
        """``value`` for an attribute: escaped, secrets hidden, never a placeholder."""
        for secret in self._secrets:
            value = value.replace(secret, "[hidden]")
        return html.escape(value, quote=True)

    def items(self, values: Sequence[str], css: str, empty: str = "none") -> str:
        """A list, or ``empty`` when there is nothing."""
        if not values:
            return f'<span class="none">{html.escape(empty)}</span>'
        lis = "".join(f'<li class="{css}">{self.text(v)}</li>' for v in values)
        return f"<ul>{lis}</ul>"

    def table(self, headers: Sequence[str], rows: Sequence[str], css: str) -> str:
        """A table of ready-made rows (``<tr>...</tr>`` strings)."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(rows)
        return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{html.escape(title)}</title>'
        '<link rel="stylesheet" href="/fleet.css"></head>'
        f"<body>{body}</body></html>"
    )


def login_page(message: str | None = None) -> str:
    """The sign-in form: a token, exchanged for a session cookie by ``POST /login``."""
    note = f'<p class="error" id="login-error">{html.escape(message)}</p>' if message else ""
    body = (
        "<h1>Fovea fleet</h1><p>Sign in with a fleet page token "
        "(<code>fovea fleet users add NAME</code> makes one).</p>"
        f"{note}"
        '<form method="post" action="/login" id="login">'
        '<label for="token">Token</label> '
        '<input type="password" id="token" name="token" autocomplete="off" required> '
        '<button type="submit" id="sign-in">Sign in</button></form>'
    )
    return _document("Fovea fleet: sign in", body)


def problem_page(message: str) -> str:
    """A page that says what cannot be shown and why."""
    body = f'<h1>Fovea fleet</h1><p class="error" id="problem">{html.escape(message)}</p>'
    return _document("Fovea fleet: problem", body)


def _device_row(h: _Html, d: DeviceView) -> str:
    seen = when(d.last_seen)
    health = f'<span class="{"ok" if d.status == "ready" else "alert"}">{h.text(d.status)}</span>'
    health += f'<div class="muted">last poll: {h.text(seen, "never")}</div>'
    if d.error:
        health += f'<div class="error">{h.text(d.error)}</div>'
    status_at = when(d.status_at)
    source = f'<div class="muted">as of {h.text(status_at)}</div>' if status_at else ""
    cells = [
        f'<td class="host">{h.text(d.host)}</td>',
        f'<td class="site">{h.text(d.site)}</td>',
        f'<td class="hardware">{h.text(d.hardware)}</td>',
        f'<td class="version">{h.text(d.model)}'
        f'<div class="muted">agent {h.text(d.agent_version, "?")}</div></td>',
        f'<td class="health">{health}</td>',
        f'<td class="precision">{h.text(d.precision)}'
        f'<div class="muted">{h.text(d.backend, "")}</div></td>',
        f'<td class="alerts">{h.items(d.alerts, "alert")}{source}</td>',
        f'<td class="proposals">{h.items(d.proposals, "proposal")}</td>',
    ]
    return f'<tr class="device" data-host="{h.attr(d.host)}">{"".join(cells)}</tr>'


def _devices(h: _Html, devices: Sequence[DeviceView]) -> str:
    if not devices:
        return '<p class="none">No devices in the inventory (<code>fovea fleet add</code>).</p>'
    headers = ["device", "site", "hardware", "model", "health", "precision", "drift alerts",
               "pending threshold proposals"]  # fmt: skip
    return h.table(headers, [_device_row(h, d) for d in devices], "devices")


def _run(h: _Html, run: FederationRun) -> str:
    out = f"<h3>{h.text(run.name)}</h3>"
    if run.error:
        return out + f'<p class="error">{h.text(run.error)}</p>'
    rounds = [
        f"<tr><td>{r.round}</td><td>{h.text(r.status)}</td>"
        f"<td>{r.accepted}/{r.replied}/{r.sampled}</td>"
        f"<td>{h.text(None if r.held_out is None else f'{r.held_out:.1f}')}</td>"
        f"<td>{h.text(r.note, '')}</td></tr>"
        for r in run.rounds
    ]
    headers = ["round", "status", "accepted/replied/sampled", "held-out accuracy %", "note"]
    out += (
        h.table(headers, rounds, "rounds") if rounds else '<p class="none">no rounds recorded</p>'
    )
    decisions = [
        f'<tr><td>{d.round}</td><td class="{"ok" if d.promoted else "alert"}">'
        f"{'promoted' if d.promoted else 'kept the deployed model'}"
        f"{'' if d.version is None else f' (bundle v{d.version})'}</td>"
        f"<td>{h.text(d.reason)}</td><td>{h.items(d.per_site, 'site')}</td>"
        f"<td>{h.text(when(d.created))}</td></tr>"
        for d in run.decisions
    ]
    out += (
        h.table(["round", "decision", "why", "per site", "when"], decisions, "decisions")
        if decisions
        else '<p class="none">no promotion decisions recorded</p>'
    )
    return out


def _federation(h: _Html, runs: Sequence[FederationRun] | None, where: Path | None) -> str:
    if runs is None:
        return '<p class="none">none recorded (start the page with --federation DIR)</p>'
    if not runs:
        return f'<p class="none">none recorded in {h.text(where)}</p>'
    return "".join(_run(h, r) for r in runs)


def _rollouts(h: _Html, rollouts: Sequence[Rollout]) -> str:
    if not rollouts:
        return '<p class="none">none recorded</p>'
    rows = []
    for r in rollouts:
        hosts = [
            f"{o.host} ({o.stage}): {o.result}"
            + (f" {o.from_version or '?'} → {o.to_version or '?'}" if o.to_version else "")
            + (f" — {o.error}" if o.error else "")
            for o in r.hosts
        ]
        took = "" if r.seconds is None else f"{r.seconds:.0f} s"
        rows.append(
            f"<tr><td>{r.id}</td><td>{h.text(r.kind)}</td><td>{h.text(Path(r.artifact).name)}</td>"
            f"<td>{h.text(r.target_version)}</td><td>{h.text(r.status)}</td>"
            f"<td>{h.text(when(r.started))}</td><td>{h.text(took)}</td>"
            f"<td>{h.items(hosts, 'host')}</td><td>{h.text(r.summary, '')}</td></tr>"
        )
    headers = ["id", "kind", "artifact", "version", "status", "started", "took", "hosts",
               "summary"]  # fmt: skip
    return h.table(headers, rows, "rollouts")


def overview_page(view: Overview, account: str) -> str:
    """The whole page for ``account``: devices, federation, rollouts."""
    h = _Html(view.secrets)
    body = (
        f'<header><h1>Fovea fleet</h1><span class="muted">signed in as {h.text(account)} · '
        f"{h.text(when(time.time()))}</span>"
        '<form method="post" action="/logout"><button type="submit" id="sign-out">'
        "Sign out</button></form></header>"
        f'<h2 id="devices">Devices</h2>{_devices(h, view.devices)}'
        '<h2 id="federation">Federated rounds and promotion decisions</h2>'
        f"{_federation(h, view.runs, view.federation_dir)}"
        f'<h2 id="rollouts">Rollouts</h2>{_rollouts(h, view.rollouts)}'
    )
    return _document("Fovea fleet", body)


__all__ = ["CSS", "login_page", "overview_page", "problem_page", "when"]
