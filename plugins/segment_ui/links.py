"""Every URL the Segment page prints or redirects to, under the path of Airflow's `[api] base_url`.

Airflow serves its UI, its API and the plugins' apps under that path (`http://host/airflow` puts
the page at `/airflow/segment/...`), so a link without it breaks behind a proxy that forwards only
that path. `url` is the one place that knows it.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import quote, urlencode, urlsplit

from airflow.configuration import conf

PREFIX = "/segment"  # where Airflow mounts the page's app (plugins/segment_page.py)
NAV = (
    ("Connections", "/connections"),
    ("Identity", "/identity"),
    ("Outbound", "/outbound"),
    ("Privacy", "/privacy"),
)  # (name, route)
DBT_DOCS = "/cosmos/segment_elt/dbt_docs_index.html"  # astronomer-cosmos' plugin serves the dbt docs there


@cache
def base_path() -> str:
    """The path of `[api] base_url` without its trailing slash ('' when Airflow is at the root); read once, as
    Airflow's API server reads it once (airflow.api_fastapi.app.API_ROOT_PATH)."""
    return urlsplit(conf.get("api", "base_url", fallback="")).path.rstrip("/")


def url(route: str, *values: object, **query: object) -> str:
    """The URL path of `route` (a path from Airflow's root) under the base path.

    Each `{}` in `route` takes the next value, quoted as one path segment; `query` becomes the
    query string: url("/segment/connections/{}/debugger", "c/1", show="all") is
    "<base>/segment/connections/c%2F1/debugger?show=all".
    """
    parts = route.split("{}")
    if len(parts) != len(values) + 1:
        raise ValueError(f"{route!r} takes {len(parts) - 1} values, got {len(values)}")
    path = parts[0] + "".join(quote(str(value), safe="") + part for value, part in zip(values, parts[1:], strict=True))
    return base_path() + path + (f"?{urlencode(query)}" if query else "")


def page_url(route: str, *values: object, **query: object) -> str:
    """url() of a route of the page itself: page_url("/connections") is "<base>/segment/connections"."""
    return url(PREFIX + route, *values, **query)
