"""Server-rendered HTML of the Segment page: one layout, small helpers, the account chart as SVG.

Everything the page needs ships here (no CDN): the style sheet and the debugger's script are inline.
"""

from __future__ import annotations

import datetime as dt
from html import escape

PREFIX = "/segment"
NAV = (("Connections", "/connections"), ("Identity", "/identity"), ("Outbound", "/outbound"))
PALETTE = ("#017cee", "#f08a24", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1f2933;background:#fff}
nav{display:flex;gap:1em;padding:.6em 1em;background:#f0f4f8;border-bottom:1px solid #d9e2ec}
nav a{color:#102a43;text-decoration:none;font-weight:600} nav a.here{color:#017cee}
main{padding:1em} h1{font-size:1.3em;margin:.2em 0 .6em} h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0} th,td{border-bottom:1px solid #e4e7eb;padding:.3em .6em;text-align:left;
vertical-align:top} th{background:#f5f7fa;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.92em} .muted{color:#7b8794} .bad{color:#c62828;font-weight:600} .ok{color:#2e7d32}
.box{border:1px solid #d9e2ec;border-radius:6px;padding:.6em 1em;margin:.6em 0;background:#fafbfc}
form.inline{display:inline} td small{display:block;max-width:14em;font-size:.85em}
code.url{display:inline-block;max-width:22em;word-break:break-all} button{cursor:pointer}
.legend span{margin-right:1em;white-space:nowrap}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:-1px}
"""


def e(value) -> str:
    """A value as escaped text; None as a dash."""
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, dt.datetime):
        return escape(f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return escape(str(value))


def url(path: str) -> str:
    return PREFIX + path


def link(path: str, text) -> str:
    return f'<a href="{escape(url(path))}">{e(text)}</a>'


def table(
    headings: list[str], rows: list[list[str]], empty: str, numeric: set[int] = frozenset(), attrs: str = ""
) -> str:
    """Cells are HTML already (built with e() / link())."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, here: str = "", script: str = "") -> str:
    links = "".join(f'<a href="{url(path)}"{" class=here" if path == here else ""}>{name}</a>' for name, path in NAV)
    links += '<a href="/cosmos/segment_elt/dbt_docs_index.html">dbt docs</a>'
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · Segment</title>'
        f"<style>{STYLE}</style></head><body><nav>{links}</nav><main><h1>{escape(title)}</h1>{body}</main>"
        f"{f'<script>{script}</script>' if script else ''}</body></html>"
    )


def chart(daily: list[dict], since: dt.date, today: dt.date, only: str | None = None) -> str:
    """Daily event counts as stacked SVG bars, one colour per event name (or one name)."""
    days = [since + dt.timedelta(days=i) for i in range((today - since).days + 1)]
    names = sorted({r["event_name"] for r in daily if only is None or r["event_name"] == only})
    counts = {(r["event_date"], r["event_name"]): r["event_count"] for r in daily}
    totals = [sum(counts.get((d, n), 0) for n in names) for d in days]
    top = max([*totals, 1])
    width, height, left, right, bottom = 720, 220, 40, 24, 20
    bar = (width - left - right) / len(days)
    parts = [
        f'<svg id="daily-chart" viewBox="0 0 {width} {height + bottom}" width="{width}" height="{height + bottom}"'
        f' role="img" aria-label="daily events">',
        f'<text x="0" y="12" font-size="11">{top}</text><text x="0" y="{height}" font-size="11">0</text>',
        f'<line x1="{left}" y1="{height}" x2="{width}" y2="{height}" stroke="#9aa5b1"/>',
    ]
    for i, day in enumerate(days):
        y = height
        for k, name in enumerate(names):
            count = counts.get((day, name), 0)
            if not count:
                continue
            h = count / top * (height - 10)
            y -= h
            parts.append(
                f'<rect x="{left + i * bar + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(f"{day} {name}: {count}")}</title></rect>'
            )
        if i % 5 == 0 or day == today:
            parts.append(f'<text x="{left + i * bar}" y="{height + 14}" font-size="10">{day:%m-%d}</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{PALETTE[k % len(PALETTE)]}"></i>{escape(n)}</span>' for k, n in enumerate(names)
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'
