"""The identity resolution report of one connection: how its events of the last days resolved,
rule by rule and day by day, and the values its unresolved events carried most.

It reads the marts identity_resolution_report and identity_unresolved_values, and is the one
query behind every view of the report (`segment-elt connections resolution`, a UI page), so
they cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from segment_elt import db
from segment_elt.control import connections
from segment_elt.errors import UserError

DEFAULT_DAYS = 7
MAX_DAYS = 366
TOP_VALUES = 10  # per kind
UNRESOLVED = "unresolved"  # the report's matched_by for events no rule matched
MARTS = ("analytics.identity_resolution_report", "analytics.identity_unresolved_values")


@dataclass(frozen=True)
class ResolutionReport:
    """One connection's report over the event days since `since` (UTC), newest first."""

    connection_id: str
    org_id: str
    days: int
    since: dt.date
    daily: list[dict]  # event_date, matched_by, event_count, unique_users: the mart's rows
    by_rule: list[dict]  # matched_by, event_count, share: over the whole window, most events first
    by_day: list[dict]  # event_date, event_count, unresolved_count, unresolved_share
    unresolved_values: list[dict]  # kind, value, event_count, last_seen_at: the top TOP_VALUES per kind


def report(conn: psycopg.Connection, connection_id: str, days: int = DEFAULT_DAYS) -> ResolutionReport:
    """The report of `connection_id` over its last `days` UTC event days (today included)."""
    org_id = connections.require_live(conn, connection_id)
    if not 1 <= days <= MAX_DAYS:
        raise UserError(f"--days must be between 1 and {MAX_DAYS}")
    if not db.relations_exist(conn, *MARTS):
        raise UserError(
            "the identity resolution report is not built yet: run `segment-elt pipeline run-once` "
            "(or wait for the next segment_rollups run)"
        )
    since = db.one(conn, "select (now() at time zone 'UTC')::date - %s", (days - 1,))[0]
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        daily = cur.execute(
            "select event_date, matched_by, event_count, unique_users from analytics.identity_resolution_report"
            " where connection_id = %s and event_date >= %s"
            " order by event_date desc, event_count desc, matched_by",
            (connection_id, since),
        ).fetchall()
        unresolved_values = cur.execute(
            """
            select kind, value, event_count, last_seen_at from (
                select kind, value, sum(event_count)::bigint as event_count, max(last_seen_at) as last_seen_at,
                       row_number() over (partition by kind order by sum(event_count) desc, value) as rank
                from analytics.identity_unresolved_values
                where connection_id = %s and event_date >= %s
                group by kind, value
            ) as ranked
            where rank <= %s
            order by kind, event_count desc, value
            """,
            (connection_id, since, TOP_VALUES),
        ).fetchall()
    return ResolutionReport(
        connection_id, org_id, days, since, daily, _by_rule(daily), _by_day(daily), unresolved_values
    )


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _by_rule(daily: list[dict]) -> list[dict]:
    totals: dict[str, int] = {}
    for row in daily:
        totals[row["matched_by"]] = totals.get(row["matched_by"], 0) + row["event_count"]
    everything = sum(totals.values())
    return [
        {"matched_by": rule, "event_count": count, "share": _share(count, everything)}
        for rule, count in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    ]


def _by_day(daily: list[dict]) -> list[dict]:
    days: dict[dt.date, list[int]] = {}
    for row in daily:
        counts = days.setdefault(row["event_date"], [0, 0])
        counts[0] += row["event_count"]
        counts[1] += row["event_count"] if row["matched_by"] == UNRESOLVED else 0
    return [
        {
            "event_date": day,
            "event_count": total,
            "unresolved_count": unresolved,
            "unresolved_share": _share(unresolved, total),
        }
        for day, (total, unresolved) in days.items()
    ]
