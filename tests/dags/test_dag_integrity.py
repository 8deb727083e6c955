"""Every DAG imports, has an owner, retries, tags, a schedule and typed params as the contract says."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pendulum

EXPECTED = {
    "segment_rollups",
    "segment_daily",
    "segment_replay",
    "segment_reconcile",
    "segment_maintenance",
    "segment_privacy",
}


def test_dags_import_with_owner_retries_tags(dags):
    assert set(dags) >= EXPECTED
    for dag in dags.values():
        assert dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        assert not dag.catchup, dag.dag_id
        for task in dag.tasks:
            assert task.owner == "data-engineering", (dag.dag_id, task.task_id)
            assert task.retries is not None, (dag.dag_id, task.task_id)


def test_schedules(dags):
    rollups = dags["segment_rollups"].timetable
    start = pendulum.datetime(2026, 3, 1, 12, 3, tz="UTC")
    info = rollups.next_dagrun_info(last_automated_data_interval=None, restriction=_restriction(start))
    assert info.data_interval.end - info.data_interval.start == dt.timedelta(minutes=10)
    assert not dags["segment_replay"].timetable.can_be_scheduled
    assert not dags["segment_reconcile"].timetable.can_be_scheduled
    maintenance = dags["segment_maintenance"].timetable
    info = maintenance.next_dagrun_info(last_automated_data_interval=None, restriction=_restriction(start))
    assert info.data_interval.end - info.data_interval.start == dt.timedelta(days=1)
    privacy = dags["segment_privacy"].timetable
    info = privacy.next_dagrun_info(last_automated_data_interval=None, restriction=_restriction(start))
    assert info.data_interval.end - info.data_interval.start == dt.timedelta(hours=1)
    daily = dags["segment_daily"].timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=_restriction(start)
    )
    assert daily.data_interval.start.time() == dt.time(0)  # one UTC event day a run
    assert daily.data_interval.end - daily.data_interval.start == dt.timedelta(days=1)


def _restriction(start):
    from airflow.timetables.base import TimeRestriction

    return TimeRestriction(earliest=start, latest=None, catchup=False)


def test_manual_dags_have_typed_params(dags):
    replay = dags["segment_replay"].params
    assert set(replay.keys()) == {"connection_id", "start_date", "end_date"}
    assert replay.get_param("start_date").schema["format"] == "date"
    assert set(dags["segment_reconcile"].params.keys()) == {"connection_id"}
    daily = dags["segment_daily"].params
    assert set(daily.keys()) == {"start_date", "end_date"}
    assert daily.get_param("end_date").schema["format"] == "date"


def test_dbt_models_are_visible_tasks_that_start_in_the_triggerer(dags):
    """One dbt_build task builds the project; each model, seed and snapshot is a task of its own,
    grouped by folder, that never needs a worker."""
    for dag_id in ("segment_rollups", "segment_daily", "segment_replay", "segment_reconcile"):
        tasks = {t.task_id: t for t in dags[dag_id].tasks}
        assert "dbt_build" in tasks, dag_id
        for model in (
            "staging.stg_segment__events",
            "marts.product_events",
            "marts.account_health",
            "seeds.identity_rules",
        ):
            node = tasks[f"dbt.{model}"]
            assert node.start_from_trigger, (dag_id, model)
            assert node.upstream_task_ids == {"dbt_build"}, (dag_id, model)
    assert "outbound_sync" in {t.task_id for t in dags["segment_rollups"].tasks}


def test_every_dbt_writing_task_shares_the_one_slot_pool(dags):
    """Two runs never write a model at once: every task that builds dbt is in pool segment_dbt."""
    for dag_id in ("segment_rollups", "segment_daily", "segment_replay", "segment_reconcile"):
        assert dags[dag_id].get_task("dbt_build").pool == "segment_dbt", dag_id
    assert dags["segment_privacy"].get_task("rebuild").pool == "segment_dbt"


def test_shell_environment_points_at_the_stacks_metadata_database():
    """`eval "$(python -m segment_elt.local.airflow_env)"` (the README's way to use the airflow CLI next to
    `make up`) must reach the same metadata database and project database as the running stack."""
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"}
    env["DATABASE_URL"] = "postgresql://segment:pw@db.internal:5432/segment"
    out = subprocess.run(
        [sys.executable, "-m", "segment_elt.local.airflow_env"], env=env, capture_output=True, text=True, check=True
    ).stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    assert (
        exports["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "'postgresql+psycopg2://segment:pw@db.internal:5432/airflow'"
    )
    assert exports["DATABASE_URL"] == "'postgresql://segment:pw@db.internal:5432/segment'"
