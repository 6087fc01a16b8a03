"""Small HTML building blocks for the report (escaped text, tables, images, notices)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Section", "image", "missing", "num", "paragraph", "pct", "table"]


@dataclass(frozen=True)
class Section:
    """One titled part of the report; ``body`` is HTML."""

    anchor: str
    title: str
    body: str


def missing(what: str, detail: str) -> str:
    """The notice a section shows when its input is not there (yet)."""
    return (
        f'<p class="missing"><strong>not run yet:</strong> {html.escape(what)} '
        f"<span>({html.escape(detail)})</span></p>"
    )


def paragraph(text: str, css: str = "") -> str:
    """An escaped paragraph."""
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def image(uri: str, alt: str) -> str:
    """An embedded PNG (a data URI)."""
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table of escaped cells; numbers right-aligned."""
    out = ["<table><thead><tr>"]
    out += [f"<th>{html.escape(str(h))}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = []
        for cell in row:
            text = "—" if cell is None else str(cell)
            numeric = text[:1].isdigit() or (text[:1] in "+-" and text[1:2].isdigit())
            cells.append(f'<td class="{"n" if numeric else ""}">{html.escape(text)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def num(value: object, digits: int = 3) -> str | None:
    """A float with ``digits`` decimals; None for missing or NaN."""
    if not isinstance(value, int | float) or math.isnan(float(value)):
        return None
    return f"{float(value):.{digits}f}"


def pct(value: object, digits: int = 1) -> str | None:
    """A fraction shown as a percentage; None for missing or NaN."""
    if not isinstance(value, int | float) or math.isnan(float(value)):
        return None
    return f"{100 * float(value):.{digits}f}%"
