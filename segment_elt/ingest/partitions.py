"""The day partitions of raw.segment_events (one per UTC receive day, plus a default partition).

Partitions are made ahead of time (segment_maintenance, DAYS_AHEAD days) by the database function
raw.create_day_partitions (migration 13), the one place that knows how a partition is built; a
row whose day has none lands in the default partition, and making that day's partition moves it
there. Every change takes its locks with a short lock_timeout and retries, so that it never
queues the receivers' inserts behind a long read (a dbt build) for more than LOCK_TIMEOUT.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from segment_elt import db

DAYS_AHEAD = 7
DEFAULT = "raw.segment_events_default"
LOCK_TIMEOUT = "200ms"  # what a change may stall the receivers' inserts queued behind it
ATTEMPTS = 60
PAUSE_S = 3.0

log = logging.getLogger(__name__)
T = TypeVar("T")


class PartitionsBusy(RuntimeError):
    """A partition change could not take its locks in ATTEMPTS tries."""


def name(day: dt.date) -> str:
    """The qualified name of the partition of a UTC day."""
    return f"raw.segment_events_p{day:%Y%m%d}"


def create_days(conn: psycopg.Connection, first: dt.date, last: dt.date) -> int:
    """Create the missing partitions of the days first..last (moving the default partition's
    rows of those days into them); returns how many were created."""
    if last < first:
        return 0
    return _with_short_locks(conn, lambda: db.one(conn, "select raw.create_day_partitions(%s, %s)", (first, last))[0])


def days(conn: psycopg.Connection) -> list[dt.date]:
    """The days that have a partition, oldest first."""
    rows = conn.execute(
        """
        select substring(child.relname from 'segment_events_p(\\d{8})$')
        from pg_inherits
        join pg_class as child on child.oid = pg_inherits.inhrelid
        where pg_inherits.inhparent = 'raw.segment_events'::regclass and child.relname ~ '^segment_events_p\\d{8}$'
        order by 1
        """
    ).fetchall()
    return [dt.datetime.strptime(day, "%Y%m%d").date() for (day,) in rows]


def default_days(conn: psycopg.Connection) -> list[dt.date]:
    """The UTC days of the rows in the default partition."""
    return [
        day
        for (day,) in conn.execute(
            f"select distinct (received_at at time zone 'UTC')::date from {DEFAULT} order by 1"
        ).fetchall()
    ]


def hold(conn: psycopg.Connection, day: dt.date) -> None:
    """Lock the partition of `day` against writes (a replay of that day waits) until the caller's
    transaction ends, so that what the caller checked in it is what drop_day drops."""
    _with_short_locks(conn, lambda: conn.execute(f"lock table {name(day)} in share mode"))


def drop_day(conn: psycopg.Connection, day: dt.date, keep_keys: list[str]) -> int:
    """Drop the partition of `day`; its rows whose archive key is in keep_keys move to the default
    partition first (in the same transaction). Returns how many rows went."""
    table = name(day)

    def drop() -> int:
        # the parent alone first (as landing does), then the partition: dropping one needs both
        conn.execute("lock table only raw.segment_events in access exclusive mode")
        conn.execute(f"lock table {table} in access exclusive mode")
        (rows,) = db.one(conn, f"select count(*) from {table}")
        if not keep_keys:
            conn.execute(f"drop table {table}")
            return rows
        conn.execute(
            f"create temporary table kept_rows as select * from {table} where archive_key = any(%s)", (keep_keys,)
        )
        conn.execute(f"drop table {table}")
        kept = conn.execute("insert into raw.segment_events select * from kept_rows").rowcount
        conn.execute("drop table kept_rows")
        return rows - kept

    return _with_short_locks(conn, drop)


def _with_short_locks(conn: psycopg.Connection, change: Callable[[], T]) -> T:
    """Run `change` in a transaction (a savepoint in the caller's) whose lock waits give up after
    LOCK_TIMEOUT, retried."""
    (previous,) = db.one(conn, "select current_setting('lock_timeout')")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
                done = change()
                conn.execute("select set_config('lock_timeout', %s, true)", (previous,))
                return done
        except psycopg.errors.LockNotAvailable:
            log.info("raw.segment_events is busy (try %d of %d); retrying in %.0f s", attempt, ATTEMPTS, PAUSE_S)
            time.sleep(PAUSE_S)
    raise PartitionsBusy(
        f"could not lock raw.segment_events for a partition change in {ATTEMPTS} tries of {LOCK_TIMEOUT}:"
        " a long query holds it (see pg_stat_activity); the next maintenance run tries again"
    )
