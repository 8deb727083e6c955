"""Read-only queries behind the Segment page in Airflow's UI (app.py, docs/ui.md).

They read the control tables, the marts and the newest staged events by index, never a scan of
the staged history, so a page costs the same on a big database (benchmarks/bench_ui.py). Where
a query already exists (connections.list_connections, recent_events, rejects; resolution.report)
it is reused, so the page and the CLI cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from segment_elt import db
from segment_elt.control import connections
from segment_elt.dag_ids import ROLLUPS
from segment_elt.errors import UserError

DEBUG_LIMIT = 50  # rows of each debugger list
DEBUG_WINDOW = 200  # the newest events the event-name filter looks through
TIMELINE = 30  # events of the account timeline
CHART_DAYS = 30
OUTBOUND_RUNS = 5  # syncs shown per connection
RECENT_SESSIONS = 10  # sessions of the account view
ENGAGEMENT_MARTS = ("analytics.account_engagement_daily", "analytics.sessions", "analytics.feature_adoption")


def _rows(conn: psycopg.Connection, sql: str, params) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def last_rollups_run(conn: psycopg.Connection) -> dict | None:
    """The newest segment_rollups run record: status, when, rows staged, the marts' row figures."""
    rows = _rows(
        conn,
        "select run_id, status, started_at, finished_at, staged_rows, detail from control.pipeline_runs"
        " where dag_id = %s order by started_at desc limit 1",
        (ROLLUPS,),
    )
    return rows[0] if rows else None


def connections_overview(conn: psycopg.Connection) -> list[dict]:
    """Every live connection with the figures of the connections view (docs/ui.md#connections)."""
    listed = connections.list_connections(conn)
    if not listed:
        return []
    ids = [item["connection_id"] for item in listed]
    figures = {
        row["connection_id"]: row
        for row in _rows(
            conn,
            """
        select c.connection_id,
               (select coalesce(sum(r.repeats), 0) from control.rejects r
                 where r.connection_id = c.connection_id and r.rejected_at > now() - interval '1 hour') as rejected_1h,
               (select r.reason from control.rejects r
                 where r.connection_id = c.connection_id and r.rejected_at > now() - interval '1 hour'
                 group by r.reason order by sum(r.repeats) desc, r.reason limit 1) as top_reject_reason,
               ob.status as outbound_last_status, ob.finished_at as outbound_last_at
        from unnest(%s::text[]) as c(connection_id)
        left join lateral (select o.status, o.finished_at from control.outbound_runs o
                           where o.connection_id = c.connection_id order by o.started_at desc limit 1) ob on true
        """,
            (ids,),
        )
    }
    marts = {}
    if db.relations_exist(conn, "analytics.identity_resolution_report", "analytics.recent_events"):
        marts = {
            row["connection_id"]: row
            for row in _rows(
                conn,
                """
            select c.connection_id,
                   (select coalesce(sum(r.event_count), 0) from analytics.identity_resolution_report r
                     where r.connection_id = c.connection_id
                       and r.event_date = (now() at time zone 'UTC')::date) as events_today,
                   (select coalesce(sum(r.event_count), 0) from analytics.identity_resolution_report r
                     where r.connection_id = c.connection_id
                       and r.event_date > (now() at time zone 'UTC')::date - 7) as events_7d,
                   (select max(e.received_at) from analytics.recent_events e
                     where e.connection_id = c.connection_id) as last_received_at
            from unnest(%s::text[]) as c(connection_id)
            """,
                (ids,),
            )
        }
    empty = {"events_today": None, "events_7d": None, "last_received_at": None}
    return [{**item, **figures[item["connection_id"]], **marts.get(item["connection_id"], empty)} for item in listed]


def _resolved(conn: psycopg.Connection, connection_id: str, message_ids: list[str]) -> dict[str, dict]:
    """account_id and matched_by of the events resolution has reached (product_events' unique index)."""
    if not message_ids or not db.relations_exist(conn, "analytics.product_events"):
        return {}
    rows = _rows(
        conn,
        "select message_id, account_id, matched_by from analytics.product_events"
        " where connection_id = %s and message_id = any(%s)",
        (connection_id, message_ids),
    )
    return {row["message_id"]: row for row in rows}


def debugger(conn: psycopg.Connection, connection_id: str, event_name: str | None = None, show: str = "all") -> dict:
    """The newest accepted events (staged, live) and rejected requests of one connection.

    `event_name` keeps the accepted events of that name among the newest DEBUG_WINDOW; `show` is
    'all', 'accepted' or 'rejected'."""
    if show not in ("all", "accepted", "rejected"):
        raise UserError("show must be one of all, accepted, rejected")
    org_id = connections.require_live(conn, connection_id)
    accepted: list[dict] = []
    if show != "rejected":
        newest = connections.recent_events(conn, connection_id, DEBUG_WINDOW if event_name else DEBUG_LIMIT)
        accepted = [e for e in newest if not event_name or e["event_name"] == event_name][:DEBUG_LIMIT]
        resolved = _resolved(conn, connection_id, [e["message_id"] for e in accepted])
        for event in accepted:
            found = resolved.get(event["message_id"], {})
            event["account_id"], event["matched_by"] = found.get("account_id"), found.get("matched_by")
    rejected = connections.rejects(conn, connection_id, DEBUG_LIMIT) if show != "accepted" else []
    for row in rejected:
        row.pop("body_head", None)  # the page shows status and reason; the CLI shows the body's head
    return {"connection_id": connection_id, "org_id": org_id, "accepted": accepted, "rejected": rejected}


def seen_event_names(conn: psycopg.Connection, connection_id: str) -> list[str]:
    """Names of the connection's newest events that are not on its allowlist (suggestions)."""
    newest = connections.recent_events(conn, connection_id, DEBUG_WINDOW)
    return sorted({e["event_name"] for e in newest if e["event_name"] and not e["in_allowlist"]})


def allowlist(conn: psycopg.Connection, connection_id: str) -> list[str]:
    return connections.allowlist(conn, connection_id)


def account_view(conn: psycopg.Connection, org_id: str, account_id: str) -> dict:
    """Daily counts of the last CHART_DAYS days, the newest events, indicators and the health score."""
    if not db.relations_exist(
        conn,
        "analytics.account_event_daily",
        "analytics.account_indicators",
        "analytics.account_health",
        "analytics.product_events",
    ):
        raise UserError("the account marts are not built yet: wait for the first segment_rollups run")
    today = conn.execute("select (now() at time zone 'UTC')::date").fetchone()[0]
    since = today - dt.timedelta(days=CHART_DAYS - 1)
    daily = _rows(
        conn,
        "select event_date, event_name, event_count, unique_users from analytics.account_event_daily"
        " where org_id = %s and event_date >= %s and account_id = %s"
        " order by event_date, event_name",
        (org_id, since, account_id),
    )
    indicators = _rows(
        conn,
        "select event_name, events_7d, events_30d, active_users_7d, active_users_30d,"
        " last_seen_at from analytics.account_indicators where org_id = %s and account_id = %s"
        " order by events_30d desc, event_name",
        (org_id, account_id),
    )
    health = _rows(
        conn,
        "select health_score, computed_at from analytics.account_health where org_id = %s and account_id = %s",
        (org_id, account_id),
    )
    name = _rows(conn, "select name from app.accounts where org_id = %s and account_id = %s", (org_id, account_id))
    if not (daily or indicators or health or name):
        raise UserError(f"no account {account_id!r} in org {org_id!r}")
    # The newest events: one backward step of the (org_id, account_id, event_name, event_at) index per name.
    timeline = _rows(
        conn,
        """
        select e.event_at, e.event_name, e.event_type, e.user_id, e.matched_by, e.connection_id, e.message_id
        from unnest(%s::text[]) as n(event_name)
        cross join lateral (select * from analytics.product_events p
                            where p.org_id = %s and p.account_id = %s and p.event_name = n.event_name
                            order by p.event_at desc limit %s) e
        order by e.event_at desc, e.message_id limit %s
        """,
        ([i["event_name"] for i in indicators], org_id, account_id, TIMELINE, TIMELINE),
    )
    score = health[0] if health else None
    return {
        **_engagement(conn, org_id, account_id, today),
        "org_id": org_id,
        "account_id": account_id,
        "name": name[0]["name"] if name else None,
        "since": since,
        "today": today,
        "daily": daily,
        "indicators": indicators,
        "timeline": timeline,
        "health": score,
        "components": _components(conn, indicators, score),
    }


def _engagement(conn: psycopg.Connection, org_id: str, account_id: str, today: dt.date) -> dict:
    """The account's engagement over the last CHART_DAYS days (account_engagement_daily; distinct
    users over 7 / 30 days from int_usage__daily_users, as no mart sums them), its RECENT_SESSIONS
    newest sessions and its feature adoption. `engagement` is None while these marts are not built."""
    if not db.relations_exist(conn, *ENGAGEMENT_MARTS, "intermediate.int_usage__daily_users"):
        return {"engagement": None, "sessions": [], "adoption": []}
    since = today - dt.timedelta(days=CHART_DAYS - 1)
    # (org_id, event_date, account_id) index: the org's days of the window, then the account
    days = _rows(
        conn,
        "select event_date, active_users, sessions, session_minutes, median_session_minutes,"
        " active_days_7d, active_days_30d from analytics.account_engagement_daily"
        " where org_id = %s and event_date >= %s and account_id = %s order by event_date",
        (org_id, since, account_id),
    )
    # (org_id, account_id, event_name, user_key, event_date) index, read only
    users = _rows(
        conn,
        "select count(distinct user_key) filter (where event_date > %s) as active_users_7d,"
        " count(distinct user_key) as active_users_30d from intermediate.int_usage__daily_users"
        " where org_id = %s and account_id = %s and event_date >= %s",
        (today - dt.timedelta(days=7), org_id, account_id, since),
    )[0]
    # the account's newest sessions: (org_id, account_id, session_start) index, backward
    sessions = _rows(
        conn,
        "select user_key, session_number, session_start, round(duration_s / 60.0, 2) as duration_minutes,"
        " event_count, first_name from analytics.sessions where org_id = %s and account_id = %s"
        " order by session_start desc, user_key, session_number limit %s",
        (org_id, account_id, RECENT_SESSIONS),
    )
    adoption = _rows(
        conn,
        "select feature, first_used_at, last_used_at, users, adopted from analytics.feature_adoption"
        " where org_id = %s and account_id = %s order by adopted desc, last_used_at desc, feature",
        (org_id, account_id),
    )
    # the window's median as the mart computes a day's (percentile_cont of duration_s, in minutes);
    # session_date is the UTC date of session_start, so this is the window's sessions by that index
    median = conn.execute(
        "select round((percentile_cont(0.5) within group (order by duration_s::float8) / 60)::numeric, 2)"
        " from analytics.sessions where org_id = %s and account_id = %s and session_start >= %s",
        (org_id, account_id, dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)),
    ).fetchone()[0]
    by_day = {d["event_date"]: d for d in days}
    latest = days[-1] if days else None  # the trailing active days as of the newest day with a row
    return {
        "engagement": {
            "active_users_today": by_day[today]["active_users"] if today in by_day else 0,
            "active_users_7d": users["active_users_7d"],
            "active_users_30d": users["active_users_30d"],
            "sessions": sum(d["sessions"] for d in days),
            "session_minutes": sum((d["session_minutes"] for d in days), start=Decimal(0)),
            "median_session_minutes": median,
            "active_days_as_of": latest["event_date"] if latest else None,
            "active_days_7d": latest["active_days_7d"] if latest else 0,
            "active_days_30d": latest["active_days_30d"] if latest else 0,
            "days": days,
        },
        "sessions": sessions,
        "adoption": adoption,
    }


def _components(conn: psycopg.Connection, indicators: list[dict], health: dict | None) -> list[dict]:
    """The health score's components (docs/tables.md#account_health), from the indicators at the
    score's as_of: activity, breadth and recency are their measures over the targets; users
    (distinct users across event names, which no mart keeps) is what the score leaves over."""
    if health is None or not db.relations_exist(conn, "seeds.health_weights"):
        return []
    weights = {
        r["component"]: r
        for r in _rows(conn, "select component, weight::float, target::float from seeds.health_weights", ())
    }
    last_seen = max((i["last_seen_at"] for i in indicators if i["last_seen_at"]), default=None)
    measures = {
        "activity": sum(i["events_30d"] for i in indicators),
        "breadth": sum(1 for i in indicators if i["events_30d"]),
        "recency": (health["computed_at"] - last_seen).total_seconds() / 86400 if last_seen else None,
    }
    scores = {}
    for name in ("activity", "breadth"):
        if name in weights:
            scores[name] = min(1.0, measures[name] / weights[name]["target"])
    if "recency" in weights:
        days = measures["recency"]
        scores["recency"] = 0.0 if days is None else max(0.0, 1 - days / weights["recency"]["target"])
    if "users" in weights:
        total = sum(w["weight"] for w in weights.values())
        rest = sum(weights[k]["weight"] * v for k, v in scores.items())
        scores["users"] = min(
            1.0, max(0.0, (float(health["health_score"]) / 100 * total - rest) / weights["users"]["weight"])
        )
        measures["users"] = round(scores["users"] * weights["users"]["target"], 1)  # capped at the target
    out = []
    for name in ("activity", "breadth", "users", "recency"):
        if name in weights:
            out.append(
                {
                    "component": name,
                    "weight": weights[name]["weight"],
                    "target": weights[name]["target"],
                    "measure": measures.get(name),
                    "score": round(scores[name], 3),
                }
            )
    return out


def outbound_view(conn: psycopg.Connection) -> list[dict]:
    """Per live connection: whether outbound is enabled, and its last OUTBOUND_RUNS syncs."""
    out = []
    for item in connections.list_connections(conn):
        runs = _rows(
            conn,
            "select started_at, finished_at, status, sent, skipped_unchanged, oversized, failed, error"
            " from control.outbound_runs where connection_id = %s order by started_at desc limit %s",
            (item["connection_id"], OUTBOUND_RUNS),
        )
        configured = item["outbound_region"] is not None
        out.append(
            {
                "connection_id": item["connection_id"],
                "org_id": item["org_id"],
                "name": item["name"],
                "configured": configured,
                "enabled": item["outbound_enabled"],
                "region": item["outbound_region"],
                "runs": runs,
            }
        )
    return out
