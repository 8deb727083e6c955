"""One writer of the dbt models at a time, whoever starts dbt: a real run through dag.test() (which
must own the main thread) and a real `segment-elt connections reconcile` building in-process."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import psycopg

from segment_elt import db as segment_db
from segment_elt.pipeline import runs
from tests.dags.test_dag_runs import NOW, land, total_events, tracks
from tests.test_cli import CLI


def start_cli_reconcile_once_a_run_is_open(database_url: str, connection_id: str) -> tuple[threading.Thread, dict]:
    """Start the CLI's in-process reconcile (no Airflow answers) as soon as a run record is open."""
    started: dict = {}

    def watch() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while conn.execute("select 1 from control.pipeline_runs where status = 'running'").fetchone() is None:
                time.sleep(0.05)
        started["cli"] = subprocess.Popen(
            [CLI, "connections", "reconcile", connection_id],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "AIRFLOW_API_URL": "http://127.0.0.1:9"},
        )

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher, started


def test_a_cli_reconcile_waits_for_the_airflow_run_and_says_what_it_waits_for(dags, db, acme, database_url):
    land(db, acme, tracks(5), NOW)
    watcher, started = start_cli_reconcile_once_a_run_is_open(database_url, acme.connection_id)
    result = dags["segment_rollups"].test()
    watcher.join(timeout=5)
    _, err = started["cli"].communicate(timeout=600)
    assert result.state == "success"
    assert started["cli"].returncode == 0, err
    assert "waiting for Airflow run segment_rollups/" in err, err
    assert "to finish writing the dbt models" in err
    assert total_events(db) == 5


def test_an_airflow_run_waits_for_an_in_process_build(dags, db, acme, database_url):
    land(db, acme, tracks(3), NOW)
    held, released = threading.Event(), {}

    def in_process_build() -> None:
        with (
            segment_db.connect(application_name="segment-elt in-process dbt build (test)") as lock_conn,
            runs.sole_writer(lock_conn),
        ):
            held.set()
            time.sleep(15)
            released["at"] = lock_conn.execute("select clock_timestamp()").fetchone()[0]

    builder = threading.Thread(target=in_process_build, daemon=True)
    builder.start()
    held.wait(timeout=30)
    result = dags["segment_rollups"].test()
    builder.join()
    assert result.state == "success"
    opened = db.execute("select started_at from control.pipeline_runs").fetchone()[0]
    assert opened > released["at"]  # the run's plan waited for the build to let go
    assert total_events(db) == 3
