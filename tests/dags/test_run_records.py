"""Run records through real dag.test() runs: a record left open by a crash is closed by the next
run, and a failed outbound sync never rewrites the record of the dbt build before it."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg

from segment_elt.control import crypto
from segment_elt.local import samples
from segment_elt.outbound import segment_api
from tests.dags.test_dag_runs import NOW, land, run, total_events, tracks
from tests.outbound.conftest import StandIn


def records(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "select status, staged_rows, detail->>'reason' from control.pipeline_runs order by started_at"
        ).fetchall()


def stop_once_a_run_is_open(pg_server, database_url: str) -> threading.Thread:
    """Stop PostgreSQL (immediate: a crash) as soon as a run record is open, i.e. mid-run."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with psycopg.connect(database_url, autocommit=True) as conn:
                if conn.execute("select 1 from control.pipeline_runs where status = 'running'").fetchone():
                    break
            time.sleep(0.05)
        pg_server.stop("immediate")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_a_record_left_running_by_a_postgres_crash_is_closed_by_the_next_plan(dags, db, acme, pg_server, database_url):
    land(db, acme, tracks(6), NOW)
    watcher = stop_once_a_run_is_open(pg_server, database_url)
    crashed = dags["segment_rollups"].test()
    watcher.join()
    pg_server.start()
    assert crashed.state == "failed"
    assert records(database_url) == [("running", 6, None)]  # the failure callback could not reach PostgreSQL

    run(dags["segment_rollups"])
    (stale, _, reason), (after, staged, _) = records(database_url)
    assert stale == "failed" and "its Airflow run had ended" in reason
    assert (after, staged) == ("success", 6)
    assert total_events_fresh(database_url) == 6


def total_events_fresh(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return total_events(conn)


def test_a_failed_outbound_sync_leaves_the_dbt_build_recorded_as_success(dags, db, acme, monkeypatch):
    segment = StandIn()  # knows no write key: every batch is refused with 401
    monkeypatch.setitem(segment_api.SEGMENT_API_BASES, "us", f"{segment.url}/us")
    monkeypatch.delenv("SEGMENT_API_URL", raising=False)
    db.execute(
        "insert into control.outbound (connection_id, write_key_enc, region) values (%s, %s, 'us')",
        (acme.connection_id, crypto.encrypt("revoked-key")),
    )
    # the product's own group call gives the account a groupId, so there is a group call to send
    landed = [*tracks(4), samples.event("group", user_id="u1", group_id="acme-ext", at=NOW - dt.timedelta(hours=2))]
    land(db, acme, landed, NOW)
    try:
        result = dags["segment_rollups"].test()
    finally:
        segment.server.shutdown()
    states = {ti.task_id: ti.state for ti in result.get_task_instances()}
    assert states["dbt_build"] == "success" and states["outbound_sync"] == "failed"
    assert db.execute("select status, staged_rows from control.pipeline_runs").fetchall() == [("success", len(landed))]
    assert db.execute(
        "select status from control.outbound_runs where connection_id = %s", (acme.connection_id,)
    ).fetchall() == [("failed",)]

    db.execute("update control.outbound set enabled = false")
    run(dags["segment_rollups"])  # counts from the build that succeeded: nothing new
    assert db.execute("select staged_rows from control.pipeline_runs order by started_at desc limit 1").fetchone() == (
        0,
    )
