"""PostgreSQL connections: one function, the same settings for the CLI, the receiver and the DAGs."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.abc import Params

from segment_elt.settings import settings


def connect(
    url: str | None = None, *, timeout_s: float = 10, autocommit: bool = True, application_name: str = "segment-elt"
) -> psycopg.Connection:
    """Open a connection that fails within `timeout_s` when the server is down or stuck;
    `application_name` is how pg_stat_activity (and a writer waiting for this one) names it."""
    ms = int(timeout_s * 1000)
    return psycopg.connect(
        url or settings().require_database_url(),
        autocommit=autocommit,
        connect_timeout=max(1, int(timeout_s)),
        options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
        application_name=application_name,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=2,
    )


def one(conn: psycopg.Connection, query: str | sql.Composed, params: Params | None = None) -> tuple:
    """The row a query always returns (an aggregate, a row known to exist); LookupError if none."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError(f"the query returned no row: {query!r}")
    return row


def relations_exist(conn: psycopg.Connection, *relations: str) -> bool:
    """Whether every named table or view exists (`schema.name`; the dbt models appear with their first build)."""
    return None not in one(conn, f"select {', '.join(['to_regclass(%s)'] * len(relations))}", relations)
