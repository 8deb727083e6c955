"""What each DAG run does, outside Airflow: planning the dbt vars, recording runs and their figures.

The rollups DAG keeps its own watermark (control.pipeline_runs): the newest staged row the last
successful run covered. The dbt models keep theirs too, so a failed or skipped run loses
nothing: the next one takes everything staged since the last success.

One writer at a time: the dbt models are written by one run or one in-process build at once,
whoever starts dbt. An Airflow run holds the writer role through its 'running' record (its dbt
tasks are separate processes, so no single connection could hold a lock across them); an
in-process build holds a session advisory lock on a connection that lives as long as the build.
Each side waits for the other, saying what it waits for.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import psycopg

from segment_elt import db
from segment_elt.dag_ids import DAILY, ROLLUPS, WRITERS
from segment_elt.settings import settings

log = logging.getLogger(__name__)
# The advisory lock (two-key form) that the record check and an in-process build take.
WRITER_LOCK = (0x5E6E7E17, 1)
# Indicators and health are relative to now: refresh them at least this often even when idle.
IDLE_REFRESH = dt.timedelta(hours=1)


@dataclass
class Plan:
    """What one run will do; returned to Airflow as XCom."""

    run_dbt: bool
    dbt_vars: dict = field(default_factory=dict)
    staged_rows: int = 0
    high_water: str | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _last_success(conn: psycopg.Connection, dag_id: str):
    return conn.execute(
        "select high_water, finished_at from control.pipeline_runs"
        " where dag_id = %s and status = 'success' order by finished_at desc limit 1",
        (dag_id,),
    ).fetchone()


def run_kind(run_type) -> str:
    """A DagRun's type as its value ('scheduled', 'manual', 'backfill', ...): a task receives the
    task SDK's DagRunType enum, whose str() is 'DagRunType.BACKFILL'."""
    return str(getattr(run_type, "value", run_type))


def late_by(conn: psycopg.Connection, now: dt.datetime | None = None) -> str | None:
    """Why a rollups run starting now is late, or None: the last successful run finished more than
    SEGMENT_ELT_ROLLUPS_LATE_MINUTES ago (runs failed, hung, or the scheduler was down since).
    Before any success there is nothing to be late against."""
    last = _last_success(conn, ROLLUPS)
    if last is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    limit = settings().rollups_late_minutes
    minutes = (now - last[1]).total_seconds() / 60
    if minutes <= limit:
        return None
    return (
        f"no successful {ROLLUPS} run for {minutes:.0f} min (last success finished {last[1]:%Y-%m-%d %H:%M} UTC; "
        f"SEGMENT_ELT_ROLLUPS_LATE_MINUTES={limit}); this run catches up"
    )


def plan_rollups(
    conn: psycopg.Connection,
    run_type: str,
    interval_start: dt.datetime | None,
    interval_end: dt.datetime | None,
    now: dt.datetime | None = None,
) -> Plan:
    """Plan a segment_rollups run.

    Scheduled and manual runs build incrementally from the last success (skipping dbt only when
    nothing is new and the marts were refreshed within IDLE_REFRESH). Backfill runs skip: days
    are rebuilt by segment_daily, one run per day instead of 144 (backfill_pointer says so).
    """
    if run_type == "backfill":
        return Plan(False, reason=backfill_pointer(interval_start))
    now = now or dt.datetime.now(dt.UTC)
    last = _last_success(conn, ROLLUPS)
    since = last[0] if last and last[0] else dt.datetime.min.replace(tzinfo=dt.UTC)
    high_water, staged = db.one(
        conn, "select max(loaded_at), count(*) from raw.segment_events where loaded_at > %s", (since,)
    )
    high = (high_water or since).isoformat() if (high_water or last) else None
    if staged == 0 and last and now - last[1] < IDLE_REFRESH:
        return Plan(False, {}, 0, high, "nothing staged since the last success")
    return Plan(True, {}, staged, high, f"{staged} rows staged since the last success")


def backfill_pointer(interval_start: dt.datetime | None) -> str:
    """The log line of a segment_rollups backfill run: what to run instead."""
    day = f"{interval_start.astimezone(dt.UTC):%Y-%m-%d}" if interval_start else "YYYY-MM-DD"
    return (
        f"backfill: {ROLLUPS} no longer rebuilds past days, skipping; backfill {DAILY} instead (one run per day): "
        f"airflow backfill create --dag-id {DAILY} --from-date {day} --to-date {day} --max-active-runs 1"
    )


class WriterBusy(RuntimeError):
    """Another writer still held the dbt models when the wait ran out."""


def stale_after() -> dt.timedelta:
    """How long a 'running' record may stay open before anyone may close it (no run of this project
    builds for hours; Airflow is asked first where it can be)."""
    return dt.timedelta(hours=settings().stale_run_hours)


def writer_wait() -> dt.timedelta:
    """How long a writer waits for another before it fails."""
    return dt.timedelta(seconds=settings().writer_wait_s)


RunIsLive = Callable[[str, str], bool]  # (dag_id, run_id) -> is that Airflow run still queued or running?


def _open_writer_runs(
    conn: psycopg.Connection, own: tuple[str, str] | None, run_is_live: RunIsLive | None, now: dt.datetime
) -> list[tuple[str, str, dt.datetime]]:
    """The writer runs whose records are 'running' and that truly run; closes the others as failed.

    A record stays 'running' when its run died without closing it (PostgreSQL down when the
    failure callback ran, a killed worker). It is closed, with the reason, when it belongs to an
    earlier attempt of `own` run, when Airflow says its run ended, or when it is older than
    stale_after() (the only test possible where Airflow cannot be asked).
    """
    rows = conn.execute(
        "select dag_id, run_id, started_at from control.pipeline_runs"
        " where status = 'running' and dag_id = any(%s) order by started_at",
        (list(WRITERS),),
    ).fetchall()
    live = []
    for dag_id, run_id, started_at in rows:
        if (dag_id, run_id) == own:
            reason = "a new attempt of the same run started"
        elif now - started_at > stale_after():
            reason = f"still 'running' after {stale_after()}, longer than any run takes"
        elif run_is_live is not None and not run_is_live(dag_id, run_id):
            reason = "its Airflow run had ended without closing this record"
        else:
            live.append((dag_id, run_id, started_at))
            continue
        conn.execute(
            "update control.pipeline_runs set status = 'failed', finished_at = clock_timestamp(),"
            " detail = detail || %s::jsonb where (dag_id, run_id, started_at) = (%s, %s, %s)",
            (
                json.dumps({"reason": f"closed as stale: {reason}", "closed_by": own and "/".join(own)}),
                dag_id,
                run_id,
                started_at,
            ),
        )
        log.warning("closed the stale run record %s/%s (started %s): %s", dag_id, run_id, started_at, reason)
    return live


def _lock_holder(conn: psycopg.Connection) -> str:
    """Who holds WRITER_LOCK, as a person would name it."""
    row = conn.execute(
        "select a.application_name, a.client_addr, a.backend_start from pg_locks l join pg_stat_activity a using (pid)"
        " where l.locktype = 'advisory' and l.granted and l.classid = %s::oid and l.objid = %s::oid and l.objsubid = 2"
        " and l.database = (select oid from pg_database where datname = current_database())",
        WRITER_LOCK,
    ).fetchone()
    if row is None:
        return "another writer taking the dbt writer lock"
    return f"{row[0] or 'a session'} (from {row[1] or 'a local socket'}, since {row[2]:%H:%M:%S %Z})"


def _wait_for_writer(take: Callable[[], str | None], say: Callable[[str], None]) -> None:
    """Call `take` until it returns None (taken) rather than the holder it waits for."""
    deadline = time.monotonic() + writer_wait().total_seconds()
    announced = None
    while (holder := take()) is not None:
        if time.monotonic() > deadline:
            raise WriterBusy(f"gave up after {writer_wait()} waiting for {holder} to finish writing the dbt models")
        if holder != announced:
            say(f"waiting for {holder} to finish writing the dbt models (one writer at a time)")
            announced = holder
        time.sleep(2)


def _airflow_record(dag_id: str, run_id: str, started_at: dt.datetime) -> str:
    return f"Airflow run {dag_id}/{run_id} (running since {started_at:%H:%M:%S %Z})"


def start_run(
    conn: psycopg.Connection,
    dag_id: str,
    run_id: str,
    run_type: str,
    plan: Plan | None = None,
    *,
    run_is_live: RunIsLive,
    say: Callable[[str], None] = print,
) -> None:
    """Open the run's 'running' record once no other writer is at work, closing stale records first.

    The record holds the writer role until finish_run closes it; meanwhile in-process builds and
    the other writer DAGs wait (see the module docstring)."""

    def take() -> str | None:
        with conn.transaction():
            if not db.one(conn, "select pg_try_advisory_xact_lock(%s::int, %s::int)", WRITER_LOCK)[0]:
                return _lock_holder(conn)
            others = _open_writer_runs(conn, (dag_id, run_id), run_is_live, dt.datetime.now(dt.UTC))
            if others:
                return _airflow_record(*others[0])
            conn.execute(
                "insert into control.pipeline_runs (dag_id, run_id, run_type, high_water, staged_rows, dbt_vars)"
                " values (%s, %s, %s, %s, %s, %s)",
                (
                    dag_id,
                    run_id,
                    run_type,
                    plan.high_water if plan else None,
                    plan.staged_rows if plan else None,
                    json.dumps(plan.dbt_vars if plan else {}),
                ),
            )
        return None

    _wait_for_writer(take, say)


@contextmanager
def sole_writer(lock_conn: psycopg.Connection, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the writer role for an in-process dbt build (the CLI's reconcile, tests, benchmarks).

    `lock_conn` must stay open for the whole build: its session advisory lock is the role, and a
    killed process releases it with its connection. Airflow records are presumed live (this
    process cannot ask Airflow) until stale_after()."""

    def take() -> str | None:
        if not db.one(lock_conn, "select pg_try_advisory_lock(%s::int, %s::int)", WRITER_LOCK)[0]:
            return _lock_holder(lock_conn)
        others = _open_writer_runs(lock_conn, None, None, dt.datetime.now(dt.UTC))
        if not others:
            return None
        lock_conn.execute("select pg_advisory_unlock(%s::int, %s::int)", WRITER_LOCK)
        return _airflow_record(*others[0])

    _wait_for_writer(take, say)
    try:
        yield
    finally:
        lock_conn.execute("select pg_advisory_unlock(%s::int, %s::int)", WRITER_LOCK)


# The run's newest record, while it is open: the one widen_run and finish_run write.
_OPEN_RECORD = """status = 'running' and (dag_id, run_id, started_at) = (
    select dag_id, run_id, started_at from control.pipeline_runs
    where dag_id = %(dag_id)s and run_id = %(run_id)s order by started_at desc limit 1)"""


def widen_run(conn: psycopg.Connection, dag_id: str, run_id: str, dbt_vars: dict, detail: dict) -> None:
    """Record, on the run's open record, the wider build it now does (a backfill run taking the
    days of queued runs into its own build)."""
    conn.execute(
        "update control.pipeline_runs set dbt_vars = %(dbt_vars)s::jsonb, detail = detail || %(detail)s::jsonb"
        f" where {_OPEN_RECORD}",
        {"dbt_vars": json.dumps(dbt_vars), "detail": json.dumps(detail), "dag_id": dag_id, "run_id": run_id},
    )


def finish_run(conn: psycopg.Connection, dag_id: str, run_id: str, status: str, detail: dict | None = None) -> dict:
    """Close the run's newest record if still open; returns its figures (rows, duration) for the log.

    A closed record is never rewritten: the rollups run's status is its dbt build's, whatever a
    later task (the outbound sync, recorded per connection in control.outbound_runs) does."""
    row = conn.execute(
        "update control.pipeline_runs set finished_at = clock_timestamp(), status = %(status)s,"
        f" detail = detail || %(detail)s::jsonb where {_OPEN_RECORD}"
        " returning staged_rows, extract(epoch from finished_at - started_at), high_water",
        {"status": status, "detail": json.dumps(detail or {}), "dag_id": dag_id, "run_id": run_id},
    ).fetchone()
    figures = {
        "dag_id": dag_id,
        "run_id": run_id,
        "status": status,
        "staged_rows": row[0] if row else None,
        "duration_s": round(float(row[1]), 1) if row else None,
        **(detail or {}),
    }
    log.info("run figures: %s", json.dumps(figures, default=str))
    return figures


def mart_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Row counts of the marts, for the run's log line."""
    counts = {}
    for table in ("product_events", "account_event_daily", "account_indicators", "account_health"):
        if db.relations_exist(conn, f"analytics.{table}"):
            counts[table] = db.one(conn, f"select count(*) from analytics.{table}")[0]
    return counts
