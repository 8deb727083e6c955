"""Backfill figure: `airflow backfill create --dag-id segment_daily` over DAYS days of EVENTS_PER_DAY
events, run by the real scheduler (scheduler, DAG processor and API server as `make up` runs them)
on the embedded PostgreSQL; the oldest third of the days is past retention, its staged rows
pruned, so those runs re-land it from the archive. BENCH_BACKFILL_DAYS / BENCH_BACKFILL_EVENTS
scale it down. For comparison, the same days are then rebuilt by one range run (start_date/end_date),
and one day by a run of its own, once in staging and once past retention (pruned again first)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, schema
from segment_elt.dag_ids import DAILY
from segment_elt.ingest import landing
from segment_elt.ingest.archive import object_key, open_archive
from segment_elt.local import embedded, samples
from segment_elt.pipeline import maintenance
from segment_elt.pipeline.transform import run_dbt
from tests.airflow_stack import scheduler_stack

DAYS = int(os.environ.get("BENCH_BACKFILL_DAYS", "30"))
EVENTS_PER_DAY = int(os.environ.get("BENCH_BACKFILL_EVENTS", "10000"))
PER_REQUEST = 100  # events per archived request, as Segment's batching webhook sends them
LIMIT_S = 600


def _land_days(conn, archive, created, first: dt.date) -> None:
    for d in range(DAYS):
        noon = dt.datetime.combine(first + dt.timedelta(days=d), dt.time(12), tzinfo=dt.UTC)
        for r in range(EVENTS_PER_DAY // PER_REQUEST):
            at = noon + dt.timedelta(seconds=r)
            events = [
                samples.event(
                    "track",
                    user_id=f"u{(r * PER_REQUEST + i) % 500}",
                    name="Report Created",
                    at=at - dt.timedelta(minutes=i % 60),
                )
                for i in range(PER_REQUEST)
            ]
            body = json.dumps(events).encode()
            key = object_key("", created.org_id, created.connection_id, at, body)
            archive.put(key, body)
            landing.insert_events(
                conn,
                connection_id=created.connection_id,
                org_id=created.org_id,
                text=body.decode(),
                events=events,
                received_at=at,
                archive_key=key,
            )


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=DAYS), today - dt.timedelta(days=1)
    retention = DAYS - DAYS // 3  # the oldest third of the days is past retention
    os.environ.update(
        SEGMENT_ELT_LOCAL_DIR=str(tmp),
        ARCHIVE_URL=(tmp / "archive").as_uri(),
        SEGMENT_ELT_RETENTION_DAYS=str(retention),
        SEGMENT_ELT_DAG_RETRIES="0",
    )
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        url = embedded.start(tmp / "pg", server_port=embedded.free_port())
        os.environ["DATABASE_URL"] = url
        archive = open_archive(os.environ["ARCHIVE_URL"])
        with db.connect(url, timeout_s=3600) as conn:
            schema.upgrade(conn)
            created = connections.create(conn, "bench")
            connections.allowlist(conn, created.connection_id, add=["Report Created"])
            _land_days(conn, archive, created, first)
        run_dbt(["build"], url)
        with db.connect(url, timeout_s=3600) as conn:
            pruned = maintenance.prune(conn, archive, retention)
            kept = {
                day
                for (day,) in conn.execute(
                    "select distinct (received_at at time zone 'UTC')::date from raw.segment_events"
                )
            }
        relanded = {first + dt.timedelta(days=d) for d in range(DAYS)} - kept  # their staged rows were pruned
        os.environ["AIRFLOW_PORT"] = str(embedded.free_port())  # the API server, which task processes call
        with scheduler_stack(url, DAILY) as stack:
            wall = stack.backfill(DAILY, first, last, timeout_s=3 * LIMIT_S)
            took = {day: seconds for day, (state, seconds, _) in stack.runs(DAILY).items() if state == "success"}
            with db.connect(stack.metadata_url) as conn:  # where the time goes: each task's median duration
                tasks = conn.execute(
                    "select ti.task_id, ti.state, percentile_cont(0.5) within group (order by ti.duration), count(*)"
                    " from task_instance ti join dag_run r on r.run_id = ti.run_id and r.dag_id = ti.dag_id"
                    " where ti.dag_id = %s and r.run_type = 'backfill' group by 1, 2 order by 1, 2",
                    (DAILY,),
                ).fetchall()
            with db.connect(url) as conn:
                builds = conn.execute(
                    "select count(*) from control.pipeline_runs where dag_id = %s and status = 'success'", (DAILY,)
                ).fetchone()[0]
                maintenance.prune(conn, archive, retention)  # the same days again, as one range run
            range_state, range_wall = stack.trigger(
                DAILY, {"start_date": first.isoformat(), "end_date": last.isoformat()}, 3 * LIMIT_S
            )
            per_day = {}  # one day's own run: in staging, and past retention (pruned again, so re-landed)
            for which, day in (("staging", last), ("archive", first)):
                with db.connect(url) as conn:
                    maintenance.prune(conn, archive, retention)
                per_day[which] = stack.trigger(DAILY, {"start_date": day.isoformat(), "end_date": day.isoformat()})[1]
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"backfill: {len(took)}/{DAYS} runs succeeded in {wall:.0f} s with {builds} dbt builds; pruned "
        f"{pruned.deleted_rows} rows; each run (s): {', '.join(f'{d:%m-%d} {took[d]:.0f}' for d in sorted(took))}"
    )
    print(
        "backfill tasks (state, median s, count): "
        + ", ".join(f"{task} {state} {float(median or 0):.1f} ({n})" for task, state, median, n in tasks)
    )
    print(
        f"one day's own run: {per_day['staging']:.0f} s in staging, {per_day['archive']:.0f} s re-landed from the "
        f"archive ({len(relanded)} of the {DAYS} days were past retention)"
    )
    return [
        Figure(
            f"segment_daily backfill, {DAYS} days x {EVENTS_PER_DAY:,} events (real scheduler), wall time",
            wall,
            "s",
            f"<= {LIMIT_S} s",
            wall <= LIMIT_S and len(took) == DAYS,
        ),
        Figure("  dbt builds the backfill's runs made", builds, "builds"),
        Figure(
            "  one day's own run, re-landed from the archive / in staging", per_day["archive"] / per_day["staging"], "x"
        ),
        Figure(
            f"segment_daily range run (start_date/end_date), the same {DAYS} days in one build, wall time",
            range_wall,
            "s",
            f"<= {LIMIT_S} s",
            range_wall <= LIMIT_S and range_state == "success",
        ),
    ]
