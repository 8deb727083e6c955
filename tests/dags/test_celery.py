"""The DAGs on the CeleryExecutor, as docker-compose.yaml runs them: Debian's redis-server as the
broker, the real scheduler, DAG processor and API server, and two Celery workers. segment_rollups,
a segment_daily backfill and segment_maintenance run their tasks on the workers; a worker killed
with SIGKILL in the middle of a task (its machine died) has that task retried on the other
worker, and the marts end exactly as if nothing had happened."""

from __future__ import annotations

import datetime as dt
import time

from segment_elt.dag_ids import DAILY, MAINTENANCE, ROLLUPS
from tests.airflow_stack import scheduler_stack, wait_until
from tests.dags.test_dag_runs import NOW, daily, land, total_events, tracks
from tests.helpers import free_port


def ran_on_workers(stack, dag_id: str, run_ids: list[str]) -> dict[str, str]:
    """task_id@run -> the worker that received it, for every task instance that ran to an end on a
    worker (the per-model tasks under `dbt.` start and end in the triggerer)."""
    placed = {}
    for run_id in run_ids:
        for task_id, state, celery_id, _ in stack.task_instances(dag_id, run_id):
            if state in ("success", "failed") and not task_id.startswith("dbt."):
                assert celery_id, f"{dag_id} {run_id} {task_id} ({state}) was not sent through Celery"
                placed[f"{task_id}@{run_id}"] = stack.worker_of(celery_id)
    return placed


def run_ids(db, dag_id: str) -> list[str]:
    return [row[0] for row in db.execute("select run_id from control.pipeline_runs where dag_id = %s", (dag_id,))]


def test_dags_run_on_two_celery_workers_and_a_killed_worker_loses_nothing(
    database_url, db, acme, archive_url, tmp_path, monkeypatch
):
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)  # the stack's own, not the DAG tests'
    monkeypatch.setenv("SEGMENT_ELT_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW_PORT", str(free_port()))
    monkeypatch.setenv("SEGMENT_ELT_RETENTION_DAYS", "2")
    monkeypatch.setenv("SEGMENT_ELT_DAG_RETRIES", "2")  # the killed task is retried (the DAG tests' session sets 0)
    # a task whose worker died stops heartbeating: fail it (and so retry it) after 20 s, not 5 minutes
    monkeypatch.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", "20")
    # only the runs the test starts: a DAG unpaused to run them would also get its scheduled runs
    # (a 10-minute segment_rollups run holds the writer role the others wait for)
    monkeypatch.setenv("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
    monkeypatch.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL", "5")
    for days_ago in (3, 2, 1):
        land(db, acme, tracks(3, day_offset=days_ago), NOW - dt.timedelta(days=days_ago), archive_url)
    land(db, acme, tracks(5), NOW - dt.timedelta(minutes=5), archive_url)
    days = [(NOW - dt.timedelta(days=d, hours=1)).date() for d in (3, 2, 1)]

    with scheduler_stack(database_url, ROLLUPS, DAILY, MAINTENANCE, executor="CeleryExecutor") as stack:
        assert stack.trigger(ROLLUPS, {}, timeout_s=3600)[0] == "success"
        assert total_events(db) == 14
        rolled_up = daily(db)

        stack.backfill(DAILY, days[0], days[-1], timeout_s=3600)
        assert {day: state for day, (state, _, _) in stack.runs(DAILY).items()} == dict.fromkeys(days, "success")
        assert daily(db) == rolled_up  # a rebuild from everything stored changes nothing

        assert stack.trigger(MAINTENANCE, {}, timeout_s=1800)[0] == "success"
        # retention goes by whole UTC days: the day received 3 days ago has ended more than 2 days
        # ago and goes; the day received 2 days ago ends less than 2 days ago and stays for now
        assert db.execute("select count(*) from raw.segment_events").fetchone()[0] == 14 - 3

        placed = {
            **ran_on_workers(stack, ROLLUPS, run_ids(db, ROLLUPS)),
            **ran_on_workers(stack, DAILY, run_ids(db, DAILY)),
        }
        assert None not in placed.values(), placed
        assert set(placed.values()) == {"worker-1", "worker-2"}  # both workers took tasks

        # late arrivals for yesterday, then a rebuild of yesterday whose worker dies mid-task
        land(db, acme, tracks(4, day_offset=1, user="late"), NOW - dt.timedelta(hours=2), archive_url)
        run_id = stack.start_run(DAILY, {"start_date": days[-1].isoformat(), "end_date": days[-1].isoformat()})

        def a_later_task_running() -> tuple[str, str] | None:
            """(task_id, worker) of a task running once an earlier task of the run has succeeded
            (the rebuild's build, past its planning), on the worker that took it."""
            tasks = stack.task_instances(DAILY, run_id)
            if not any(state == "success" for _, state, _, _ in tasks):
                return None
            for task_id, state, celery_id, _ in tasks:
                if state == "running" and celery_id and stack.worker_of(celery_id):
                    return task_id, stack.worker_of(celery_id)
            return None

        killed_task, killed_worker = wait_until(
            a_later_task_running, "no task of the rebuild started after its first", 1800
        )
        time.sleep(3)  # into its work
        stack.kill_worker(killed_worker)
        assert stack.wait_run(DAILY, run_id, timeout_s=3600) == "success"
        tries = {task_id: (state, tries) for task_id, state, _, tries in stack.task_instances(DAILY, run_id)}
        assert (
            tries[killed_task][0] == "success" and tries[killed_task][1] >= 2
        )  # failed for its lost heartbeat, retried
        [(_, _, retry_id, _)] = [row for row in stack.task_instances(DAILY, run_id) if row[0] == killed_task]
        survivor = ({"worker-1", "worker-2"} - {killed_worker}).pop()
        assert stack.worker_of(retry_id) == survivor

    assert total_events(db) == 14 + 4
    expected = dict(rolled_up)
    late_key = next(key for key in expected if key[1] == days[-1])
    expected[late_key] = (expected[late_key][0] + 4, expected[late_key][1] + 1)
    assert daily(db) == expected
