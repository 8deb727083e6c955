"""How far the marts trail what landed: the event-to-mart freshness people see and alert on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from segment_elt import db
from segment_elt.dag_ids import ROLLUPS


@dataclass(frozen=True)
class MartsLag:
    newest_landed: dt.datetime | None  # the newest row staged in raw.segment_events
    marts_through: dt.datetime | None  # the newest staged row the last successful rollups run took in
    seconds: float  # how long the newest landed row has waited for the marts; 0 when they hold it

    def as_dict(self) -> dict:
        return {
            "newest_landed": self.newest_landed and self.newest_landed.isoformat(),
            "marts_through": self.marts_through and self.marts_through.isoformat(),
            "seconds": self.seconds,
        }


def marts_lag(conn: psycopg.Connection, now: dt.datetime | None = None) -> MartsLag:
    """The lag between the newest event landed and the marts: 0 while the last successful rollups
    run covered everything staged, else the age of the oldest row staged after what it covered
    (what a person waits for: that row is not in analytics.product_events yet)."""
    newest, through, first_waiting = db.one(
        conn,
        """
        with covered as (
            select high_water from control.pipeline_runs
            where dag_id = %(dag_id)s and status = 'success' and high_water is not null
            order by finished_at desc limit 1
        )
        select
            (select max(loaded_at) from raw.segment_events),
            (select high_water from covered),
            (select min(loaded_at) from raw.segment_events
             where loaded_at > coalesce((select high_water from covered), '-infinity'))
        """,
        {"dag_id": ROLLUPS},
    )
    now = now or dt.datetime.now(dt.UTC)
    seconds = max(0.0, (now - first_waiting).total_seconds()) if first_waiting else 0.0
    return MartsLag(newest, through, round(seconds, 1))
