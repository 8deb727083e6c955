"""What each DAG run does, outside Airflow: planning the dbt vars, recording runs and their figures.

The rollups DAG keeps its own watermark (control.pipeline_runs): the newest staged row the last
successful run covered. The dbt models keep theirs too, so a failed or skipped run loses
nothing: the next one takes everything staged since the last success.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field

import psycopg

log = logging.getLogger(__name__)
ROLLUPS = "segment_rollups"
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


def plan_rollups(conn: psycopg.Connection, run_type: str, interval_start: dt.datetime | None,
                 interval_end: dt.datetime | None, now: dt.datetime | None = None) -> Plan:
    """Plan a segment_rollups run.

    Scheduled and manual runs build incrementally from the last success (skipping dbt only when
    nothing is new and the marts were refreshed within IDLE_REFRESH). Backfill runs recompute the
    event day their interval starts, once per day: the run of the day's first interval does it.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    last = _last_success(conn, ROLLUPS)
    since = last[0] if last and last[0] else dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    high_water, staged = conn.execute(
        "select max(loaded_at), count(*) from raw.segment_events where loaded_at > %s", (since,)
    ).fetchone()
    high = (high_water or since).isoformat() if (high_water or last) else None
    if run_type == "backfill" and interval_start is not None:
        start = interval_start.astimezone(dt.timezone.utc)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        if start - midnight >= dt.timedelta(minutes=10):
            return Plan(False, {}, staged, high, f"backfill: {start:%Y-%m-%d} is rebuilt by its first interval")
        day = start.date().isoformat()
        return Plan(True, {"rebuild_from": day, "rebuild_to": day}, staged, high, f"backfill: rebuild {day}")
    if staged == 0 and last and now - last[1] < IDLE_REFRESH:
        return Plan(False, {}, 0, high, "nothing staged since the last success")
    return Plan(True, {}, staged, high, f"{staged} rows staged since the last success")


def start_run(conn: psycopg.Connection, dag_id: str, run_id: str, run_type: str, plan: Plan | None = None) -> None:
    conn.execute(
        "insert into control.pipeline_runs (dag_id, run_id, run_type, high_water, staged_rows, dbt_vars)"
        " values (%s, %s, %s, %s, %s, %s)",
        (dag_id, run_id, run_type, plan.high_water if plan else None, plan.staged_rows if plan else None,
         json.dumps(plan.dbt_vars if plan else {})),
    )


def finish_run(conn: psycopg.Connection, dag_id: str, run_id: str, status: str, detail: dict | None = None) -> dict:
    """Close the newest record of a run; returns its figures (rows, duration) for the log."""
    row = conn.execute(
        """
        update control.pipeline_runs set finished_at = clock_timestamp(), status = %s, detail = %s
        where (dag_id, run_id, started_at) = (
            select dag_id, run_id, started_at from control.pipeline_runs
            where dag_id = %s and run_id = %s order by started_at desc limit 1)
        returning staged_rows, extract(epoch from finished_at - started_at), high_water
        """,
        (status, json.dumps(detail or {}), dag_id, run_id),
    ).fetchone()
    figures = {"dag_id": dag_id, "run_id": run_id, "status": status, "staged_rows": row[0] if row else None,
               "duration_s": round(float(row[1]), 1) if row else None, **(detail or {})}
    log.info("run figures: %s", json.dumps(figures, default=str))
    return figures


def mart_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Row counts of the marts, for the run's log line."""
    counts = {}
    for table in ("product_events", "account_event_daily", "account_indicators", "account_health"):
        exists = conn.execute("select to_regclass(%s)", (f"analytics.{table}",)).fetchone()[0]
        if exists:
            counts[table] = conn.execute(f"select count(*) from analytics.{table}").fetchone()[0]
    return counts
