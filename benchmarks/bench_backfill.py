"""Backfill figure: `airflow backfill create --dag-id segment_daily` over DAYS days of EVENTS_PER_DAY
events, run by the real scheduler (scheduler, DAG processor and API server as `make up` runs them)
on the embedded PostgreSQL; the oldest third of the days is past retention, its staged rows
pruned, so those runs re-land it from the archive. BENCH_BACKFILL_DAYS / BENCH_BACKFILL_EVENTS
scale it down. The same days are then rebuilt by one range run (start_date/end_date), pruned again
first, for comparison."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, schema
from segment_elt.ingest import landing
from segment_elt.ingest.archive import object_key, open_archive
from segment_elt.local import embedded, samples
from segment_elt.local.stack import BIN, airflow_ready, process
from segment_elt.pipeline import maintenance
from segment_elt.pipeline.dag_ids import DAILY
from segment_elt.pipeline.transform import run_dbt

DAYS = int(os.environ.get("BENCH_BACKFILL_DAYS", "30"))
EVENTS_PER_DAY = int(os.environ.get("BENCH_BACKFILL_EVENTS", "10000"))
PER_REQUEST = 100  # events per archived request, as Segment's batching webhook sends them
LIMIT_S = 600


def _land_days(conn, archive, created, first: dt.date) -> None:
    for d in range(DAYS):
        noon = dt.datetime.combine(first + dt.timedelta(days=d), dt.time(12), tzinfo=dt.UTC)
        for r in range(EVENTS_PER_DAY // PER_REQUEST):
            at = noon + dt.timedelta(seconds=r)
            events = [samples.event("track", user_id=f"u{(r * PER_REQUEST + i) % 500}", name="Report Created",
                                    at=at - dt.timedelta(minutes=i % 60)) for i in range(PER_REQUEST)]
            body = json.dumps(events).encode()
            key = object_key("", created.org_id, created.connection_id, at, body)
            archive.put(key, body)
            landing.insert_events(conn, connection_id=created.connection_id, org_id=created.org_id,
                                  text=body.decode(), events=events, received_at=at, archive_key=key)


def _airflow(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          check=False)


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return True


def _parsed(metadata_url: str) -> bool:
    """Whether the DAG processor has stored segment_daily in the metadata database."""
    with db.connect(metadata_url) as conn:
        return conn.execute("select 1 from serialized_dag where dag_id = %s", (DAILY,)).fetchone() is not None


def _backfill_completed(metadata_url: str) -> bool:
    """Whether Airflow has marked the backfill complete (every run it made has ended)."""
    with db.connect(metadata_url) as conn:
        return conn.execute("select completed_at is not null from backfill where dag_id = %s", (DAILY,)).fetchone()[0]


def _manual_run_state(metadata_url: str) -> str | None:
    with db.connect(metadata_url) as conn:
        row = conn.execute("select state from dag_run where dag_id = %s and run_type = 'manual'", (DAILY,)).fetchone()
    return row and row[0]


def _wait_until(ready, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError("the Airflow stack did not come up; see its logs")
        time.sleep(2)


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=DAYS), today - dt.timedelta(days=1)
    retention = DAYS - DAYS // 3  # the oldest third of the days is past retention
    os.environ.update(SEGMENT_ELT_LOCAL_DIR=str(tmp), ARCHIVE_URL=(tmp / "archive").as_uri(),
                      SEGMENT_ELT_RETENTION_DAYS=str(retention), SEGMENT_ELT_DAG_RETRIES="0")
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
            kept = {day for (day,) in conn.execute(
                "select distinct (received_at at time zone 'UTC')::date from raw.segment_events")}
        relanded = {first + dt.timedelta(days=d) for d in range(DAYS)} - kept  # their staged rows were pruned
        os.environ["AIRFLOW_PORT"] = str(embedded.free_port())  # the API server, which task processes call
        # DAGs paused: no scheduled run of another DAG (or of this one) shares the machine
        env = {**airflow_ready(url), "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
        with ExitStack() as stack:
            for name, args in (("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"]),
                               ("api-server", ["api-server", "--host", "127.0.0.1",
                                               "--port", os.environ["AIRFLOW_PORT"]])):
                stack.enter_context(process([str(BIN / "airflow"), *args], env, name))
            _wait_until(lambda: _answers(f"http://127.0.0.1:{os.environ['AIRFLOW_PORT']}/api/v2/version"))
            metadata = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")
            _wait_until(lambda: _parsed(metadata))
            began = time.monotonic()
            created_bf = _airflow(env, "backfill", "create", "--dag-id", DAILY, "--from-date", first.isoformat(),
                                  "--to-date", last.isoformat(), "--max-active-runs", "1")
            assert created_bf.returncode == 0, created_bf.stderr[-2000:]
            assert _airflow(env, "dags", "unpause", DAILY).returncode == 0  # after: the backfill holds yesterday
            _wait_until(lambda: _backfill_completed(metadata), timeout_s=3 * LIMIT_S)
            wall = time.monotonic() - began
            with db.connect(metadata) as conn:  # each run's wall time in Airflow, by its event day
                took = dict(conn.execute(
                    "select logical_date::date, extract(epoch from end_date - start_date) from dag_run"
                    " where dag_id = %s and run_type = 'backfill' and state = 'success'", (DAILY,)).fetchall())
            with db.connect(url, timeout_s=3600) as conn:  # the same days again, as one range run
                maintenance.prune(conn, archive, retention)
            began = time.monotonic()
            conf = json.dumps({"start_date": first.isoformat(), "end_date": last.isoformat()})
            assert _airflow(env, "dags", "trigger", DAILY, "--conf", conf).returncode == 0
            _wait_until(lambda: _manual_run_state(metadata) in ("success", "failed"), timeout_s=3 * LIMIT_S)
            range_wall, range_state = time.monotonic() - began, _manual_run_state(metadata)
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)
    staged = [float(s) for day, s in took.items() if day not in relanded]
    replayed = [float(s) for day, s in took.items() if day in relanded]
    print(f"backfill: {len(took)}/{DAYS} days succeeded in {wall:.0f} s; pruned {pruned.deleted_rows} rows; median run "
          f"{statistics.median(staged or [0]):.1f} s for a day in staging ({len(staged)}), "
          f"{statistics.median(replayed or [0]):.1f} s re-landed from the archive ({len(replayed)})")
    ratio = statistics.median(replayed) / statistics.median(staged) if staged and replayed else float("nan")
    return [
        Figure(f"segment_daily backfill, {DAYS} days x {EVENTS_PER_DAY:,} events (real scheduler), wall time",
               wall, "s", f"<= {LIMIT_S} s", wall <= LIMIT_S and len(took) == DAYS),
        Figure("  per-day cost, re-landed from the archive / in staging (median run)", ratio, "x", "", None),
        Figure(f"segment_daily range run (start_date/end_date), the same {DAYS} days in one build, wall time",
               range_wall, "s", f"<= {LIMIT_S} s", range_wall <= LIMIT_S and range_state == "success"),
    ]
