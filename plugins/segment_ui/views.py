"""The views of the Segment page: page_queries' results rendered through the autoescaped templates in templates/.

Each view is one template extending base.html; url() and page_url() (links.py) build every URL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from segment_ui import links
from segment_ui.chart import daily_bars

STATIC = Path(__file__).with_name("static")
NONE = Markup('<span class="muted">-</span>')


def value(item) -> str | Markup:
    """A value as text (the template escapes it): None as a muted dash, times in UTC, booleans as yes/no."""
    if item is None:
        return NONE
    if isinstance(item, dt.datetime):
        return f"{item.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
    if isinstance(item, bool):
        return "yes" if item else "no"
    return str(item)


TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["value"] = value
TEMPLATES.globals.update(url=links.url, page_url=links.page_url, NAV=links.NAV, DBT_DOCS=links.DBT_DOCS, here="")


def render(template: str, **context) -> str:
    return TEMPLATES.get_template(template).render(**context)


def jsonable(data):
    return json.loads(
        json.dumps(
            data,
            default=lambda v: (
                v.isoformat()
                if isinstance(v, (dt.date, dt.datetime))
                else float(v)
                if isinstance(v, decimal.Decimal)
                else str(v)
            ),
        )
    )


def error_page(message: str) -> str:
    return render("error.html", message=message)


def connections_page(items: list[dict], run: dict | None, lag) -> str:
    return render("connections.html", connections=items, run=run, lag=lag)


def debugger_page(data: dict, event_name: str, show: str, allowlist: list[str], seen: list[str], refresh_s: int) -> str:
    return render(
        "debugger.html",
        data=data,
        event_name=event_name,
        show=show,
        allowlist=allowlist,
        seen=seen,
        refresh_s=refresh_s,
    )


def account_page(data: dict, only: str | None) -> str:
    return render("account.html", data=data, chart=daily_bars(data["daily"], data["since"], data["today"], only))


def identity_page(reports: list, days: int, missing: str | None) -> str:
    return render("identity.html", reports=reports, days=days, missing=missing)


def outbound_page(items: list[dict]) -> str:
    return render("outbound.html", items=items)


def reconcile_page(connection_id: str, run_id: str, run_url: str) -> str:
    return render("reconcile.html", connection_id=connection_id, run_id=run_id, run_url=run_url)


def rules_page(rules_csv: str | None) -> str:
    return render("rules.html", rules_csv=rules_csv)


def privacy_page(
    regulations: list[dict],
    orgs: list[dict],
    kinds: dict,
    recorded: str,
    kind: str | None,
    *,
    run_url: str = "",
    run_id: str = "",
    not_started: str = "",
) -> str:
    return render(
        "privacy.html",
        regulations=regulations,
        orgs=orgs,
        kinds=kinds,
        recorded=recorded,
        recorded_kind=kind,
        run_url=run_url,
        run_id=run_id,
        not_started=not_started,
    )
