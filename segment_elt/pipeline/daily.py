"""What a segment_daily run rebuilds: event days, recomputed from everything stored.

A run rebuilds its event days in one dbt build (`rebuild_from`/`rebuild_to`), first re-landing
from the archive the receive days that retention may have pruned from staging; a backfill run
also takes the days of the backfill runs still queued after it into its build. The reference,
with the receive-day window and the covering rule: docs/dags.md#segment_daily.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from segment_elt import db
from segment_elt.dag_ids import DAILY
from segment_elt.errors import UserError
from segment_elt.ingest.archive import Archive
from segment_elt.pipeline import replay
from segment_elt.settings import settings

log = logging.getLogger(__name__)
MAX_DAYS = replay.MAX_DAYS
# A scheduled run is created at midnight for the day before; it starts work this much later (00:30
# UTC), once Segment's retries and batched clients have delivered the day's last events.
SETTLE = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class Days:
    """Inclusive UTC event days."""

    first: dt.date
    last: dt.date

    @property
    def count(self) -> int:
        return (self.last - self.first).days + 1

    def __iter__(self):
        return (self.first + dt.timedelta(days=i) for i in range(self.count))

    def dbt_vars(self) -> dict:
        return {"rebuild_from": self.first.isoformat(), "rebuild_to": self.last.isoformat()}


def days_of_run(
    interval_start: dt.datetime | None,
    interval_end: dt.datetime | None,
    start_date: str | None = None,
    end_date: str | None = None,
) -> Days:
    """The event days a run rebuilds: `start_date`..`end_date` when given (both or neither),
    else the UTC days its data interval covers (one day for the daily schedule and its backfills).
    Raises UserError for params a person typed wrong."""
    if start_date or end_date:
        try:
            first, last = dt.date.fromisoformat(start_date or ""), dt.date.fromisoformat(end_date or "")
        except ValueError:
            raise UserError(
                f"start_date and end_date must both be dates YYYY-MM-DD, got {start_date!r} and {end_date!r}"
            ) from None
    elif interval_start is None or interval_end is None:
        raise UserError("this run has no data interval: give start_date and end_date")
    else:
        first = interval_start.astimezone(dt.UTC).date()
        last = max(first, (interval_end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date())
    if last < first:
        raise UserError(f"end_date {last} is before start_date {first}")
    if (last - first).days >= MAX_DAYS:
        raise UserError(f"rebuild at most {MAX_DAYS} days in one run")
    return Days(first, last)


def settles_at(run_kind: str, interval_end: dt.datetime | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """When a scheduled run may start rebuilding its day, or None when it may now. Backfill and
    manual runs name past days: they start at once."""
    if run_kind != "scheduled" or interval_end is None:
        return None
    at = interval_end + SETTLE
    return at if (now or dt.datetime.now(dt.UTC)) < at else None


def plausible_days_ahead() -> int:
    """The dbt var plausible_days_ahead as dbt_project.yml sets it: the earliest receive day that can
    hold an event of day D is D minus this many days (docs/dags.md#segment_daily)."""
    import yaml

    project = yaml.safe_load((settings().dbt_project_dir / "dbt_project.yml").read_text())
    return int(project["vars"]["plausible_days_ahead"])


def receive_days_to_reland(days: Days, retention_days: int, now: dt.datetime | None = None) -> Days | None:
    """The receive days whose archived requests a rebuild of `days` re-lands, or None when every
    receive day that can hold their events is still in staging (docs/dags.md#segment_daily)."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    last_prunable = (cutoff - dt.timedelta(microseconds=1)).astimezone(dt.UTC).date()  # rows received < cutoff
    first = days.first - dt.timedelta(days=plausible_days_ahead())
    return Days(first, last_prunable) if first <= last_prunable else None


def covering_run(conn: psycopg.Connection, run_id: str, day: dt.date) -> str | None:
    """The successful build that rebuilt `day` for this backfill run, or None: one that found the
    run queued, took the day (detail.covered) and began after the run's previous attempt (a
    cleared run that already ran rebuilds its day itself). Called with the run's record open."""
    row = conn.execute(
        """
        with attempts as (
            select started_at from control.pipeline_runs where dag_id = %(dag)s and run_id = %(run)s
        )
        select run_id from control.pipeline_runs
        where dag_id = %(dag)s and status = 'success' and detail->'covered' ? %(day)s
          and started_at > coalesce((select max(started_at) from attempts
                                     where started_at < (select max(started_at) from attempts)), '-infinity')
        order by started_at desc limit 1
        """,
        {"dag": DAILY, "run": run_id, "day": day.isoformat()},
    ).fetchone()
    return row[0] if row else None


def failed_days(conn: psycopg.Connection, days: Days) -> set[dt.date]:
    """Days of `days` that a failed build attempted after their last successful one."""
    rows = conn.execute(
        """
        with built as (
            select status, started_at,
                   (dbt_vars->>'rebuild_from')::date as first, (dbt_vars->>'rebuild_to')::date as last
            from control.pipeline_runs where dag_id = %s and status in ('success', 'failed')
        )
        select day::date from generate_series(%s::date, %s::date, interval '1 day') day
        where (select max(started_at) from built where status = 'failed' and day between first and last)
            > coalesce((select max(started_at) from built where status = 'success' and day between first and last),
                       '-infinity')
        """,
        (DAILY, days.first, days.last),
    ).fetchall()
    return {day for (day,) in rows}


def backfill_days(day: dt.date, queued: Callable[[dt.date], bool], failed: set[dt.date], max_days: int) -> Days:
    """The days a backfill run of `day` rebuilds: its own, then the neighbouring days (later ones
    first, then earlier ones, for `--run-backwards`) whose runs are `queued` and not `failed`,
    as long as they are contiguous, at most `max_days` in all."""
    first = last = day
    for step in (1, -1):
        while (last - first).days + 1 < max_days:
            nxt = (last if step > 0 else first) + dt.timedelta(days=step)
            if nxt in failed or not queued(nxt):
                break
            first, last = min(first, nxt), max(last, nxt)
    return Days(first, last)


def reland(conn: psycopg.Connection, archive: Archive, receive_days: Days) -> replay.Replayed:
    """Re-land the archived requests of every connection received on `receive_days`; raises
    replay.ReplayIncomplete (after landing the rest) when some objects cannot be read intact."""
    total = replay.Replayed()
    connections = conn.execute("select connection_id, org_id from control.connections order by 1").fetchall()
    failures = []
    for connection_id, org_id in connections:
        try:
            done = replay.replay(conn, archive, connection_id, org_id, receive_days.first, receive_days.last)
        except replay.ReplayIncomplete as exc:
            failures.append(str(exc))
            done = exc.done
        total.add(done)
        log.info(
            "re-landed %s, receive days %s..%s: %s",
            connection_id,
            receive_days.first,
            receive_days.last,
            done.as_dict(),
        )
    if failures:
        raise replay.ReplayIncomplete("; ".join(failures), total)
    return total


def events_per_day(conn: psycopg.Connection, days: Days) -> dict[str, int]:
    """Staged events per event day of `days` (every day listed, 0 when empty), for the progress log."""
    counts = dict.fromkeys((day.isoformat() for day in days), 0)
    if db.relations_exist(conn, "staging.stg_segment__events"):
        for day, n in conn.execute(
            "select event_date, count(*) from staging.stg_segment__events where event_date between %s and %s"
            " group by 1",
            (days.first, days.last),
        ):
            counts[day.isoformat()] = n
    return counts


def progress_lines(counts: dict[str, int]) -> list[str]:
    """'day 2026-10-01 (1/3): 10000 events' per rebuilt day."""
    total = len(counts)
    return [f"day {day} ({i}/{total}): {n} events" for i, (day, n) in enumerate(counts.items(), start=1)]
