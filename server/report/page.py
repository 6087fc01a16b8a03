"""Assembling the report: every section, one self-contained HTML file."""

from __future__ import annotations

import html
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from server.report.calibration import calibration_section
from server.report.evaluation import SiteResult, evaluate_sites
from server.report.html import Section, missing
from server.report.operations import federation_section, fleet_section, promotion_section
from server.report.sources import Unreadable, Workdir, read_json
from server.report.training import models_section, monitor_section, sites_section

__all__ = ["SECTION_TITLES", "build_report"]

SECTION_TITLES = (
    "Teacher, student and each precision",
    "Operating point and calibration",
    "Distillation monitors",
    "Confusion matrices per site",
    "Federated rounds per site",
    "Promotion decision",
    "Fleet",
)

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 1em 2em;
       color: #1d2733; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 2px solid #dde3ea; padding-bottom: 0.2em;
       margin-top: 2em; }
nav a { margin-right: 1em; } .meta { color: #5a6775; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 13px; }
th, td { border: 1px solid #dde3ea; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f6f9; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.missing { background: #fff8e5; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; }
.missing span { color: #5a6775; }
.verdict { font-size: 1.15em; font-weight: 600; padding: 0.4em 0.8em; display: inline-block; }
.verdict.ok { background: #e6f4ea; color: #1e6b34; }
.verdict.kept { background: #fdecea; color: #8a1c1c; }
"""


def _guarded(title: str, anchor: str, make: Callable[[], Section]) -> Section:
    """A section, or a notice naming the unreadable input: one bad file never sinks the page."""
    try:
        return make()
    except (Unreadable, sqlite3.Error, OSError, ValueError, KeyError, TypeError) as e:
        return Section(anchor, title, missing(title.lower(), f"could not read its input: {e}"))


def _evaluate(
    work: Workdir, per_site: int, log: Callable[[str], None]
) -> tuple[dict[str, dict[str, SiteResult]] | None, str | None]:
    report = read_json(work.export / "export.json")
    sites = work.site_files()
    if report is None:
        return None, f"{work.export / 'export.json'} not found"
    if not sites:
        return None, f"no site-*.npz in {work.data}"
    log(f"running the exported student on {per_site} images of each of {len(sites)} sites")
    return evaluate_sites(work.export, report, sites, per_site=per_site), None


def build_report(
    workdir: Path,
    out: Path | None = None,
    *,
    per_site: int = 300,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Write the report of ``workdir`` (a ``fovea demo`` workdir) to ``out``; return its path.

    Default ``out``: ``<workdir>/report.html``. Sections whose inputs are missing say
    "not run yet" and name what they looked for.
    """
    work = Workdir(Path(workdir))
    out = Path(out) if out is not None else work.root / "report.html"
    try:
        evaluated, problem = _evaluate(work, per_site, log)
    except (Unreadable, OSError, ValueError, KeyError) as e:
        evaluated, problem = None, f"could not evaluate the export: {e}"
    builders: list[tuple[str, Callable[[], Section]]] = [
        ("models", lambda: models_section(work, evaluated)),
        ("calibration", lambda: calibration_section(work)),
        ("monitor", lambda: monitor_section(work)),
        ("sites", lambda: sites_section(work, evaluated, problem)),
        ("federation", lambda: federation_section(work)),
        ("promotion", lambda: promotion_section(work)),
        ("fleet", lambda: fleet_section(work)),
    ]
    sections = []
    for title, (anchor, make) in zip(SECTION_TITLES, builders, strict=True):
        log(f"section: {title}")
        sections.append(_guarded(title, anchor, make))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(work, sections))
    return out


def _page(work: Workdir, sections: list[Section]) -> str:
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>\n{s.body}</section>'
        for s in sections
    )
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fovea report: {html.escape(str(work.root))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Fovea: diabetic retinopathy screening, the loop at a glance</h1>
<p class="meta">Workdir {html.escape(str(work.root.resolve()))} · generated {stamp}</p>
<nav>{nav}</nav>
{body}
</body></html>
"""
