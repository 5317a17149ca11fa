"""One shell for every page towerkit writes (the report, a comparison, a study's page and the
server's ``/report``): the same head and style, Plotly embedded (or loaded from the server),
the title as the heading, and table cells formatted and escaped one way.

Everything a caller passes as ``body`` is HTML: text that comes from the user (paths, run
names, titles, error messages) must reach it through :func:`table` or :func:`html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from towerkit.errors import MissingExtra

__all__ = ["fmt", "page", "plotly_js", "table"]


def plotly_js() -> str:
    """Plotly's JavaScript bundle, from the installed ``plotly`` package."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MissingExtra("the report needs plotly: pip install 'towerkit[report]'") from None
    return get_plotlyjs()


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 1.6em; }
.note { color: #666; font-size: 0.9em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 8px; }
.chart { min-height: 320px; } .chart.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
"""


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` places, ints with thousands separators, None as a
    dash, anything else as escaped text."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def table(head: Sequence[str] | None, rows: Sequence[Sequence[Any]], *, css: str = "") -> str:
    """An HTML table of ``rows`` (cells through :func:`fmt`) under the header ``head`` (None:
    no header; each row's first cell is then its heading)."""
    e = html.escape
    out = [f"<table class='{e(css)}'>" if css else "<table>"]
    if head is not None:
        out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        first = f"<th>{fmt(row[0])}</th>" if head is None else f"<td>{fmt(row[0])}</td>"
        out.append("<tr>" + first + "".join(f"<td>{fmt(v)}</td>" for v in row[1:]) + "</tr>")
    out.append("</table>")
    return "".join(out)


def page(
    title: str, body: Sequence[str], *, script_src: str | None = None, scripts: Sequence[str] = ()
) -> str:
    """A whole page: ``title`` (escaped here) as its title and first heading, then ``body``
    (HTML), with Plotly embedded, or loaded from ``script_src`` (the server's own copy), and
    ``scripts`` run after the body."""
    e = html.escape
    plotly = (
        f"<script src='{e(script_src)}'></script>"
        if script_src
        else f"<script>{plotly_js()}</script>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title><style>{STYLE}</style>{plotly}</head><body>"
        f"<h1>{e(title)}</h1>\n"
        + "\n".join(body)
        + "".join(f"<script>{script}</script>" for script in scripts)
        + "</body></html>"
    )
