"""
### segment_rollups

Every 10 minutes: take everything staged since the last successful run, build the dbt project
(staging -> identity resolution -> marts; one task per model), then send what changed back to
Segment. Backfill segment_daily instead: backfill runs of this DAG skip at once, saying so.
A failed or skipped run loses nothing: the next run catches up from the last success. The run's
record is its dbt build's: a failing outbound sync is recorded per connection
(control.outbound_runs) and fails the outbound task, never the record. Alongside the build,
`dbt source freshness` fails the run (and alerts) when nothing has landed in raw.segment_events
for SEGMENT_ELT_RAW_STALE_HOURS (default 6); a run that starts more than
SEGMENT_ELT_ROLLUPS_LATE_MINUTES (default 30) after the last success sends a `late` alert.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import Asset, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from segment_elt.dag_ids import ROLLUPS
from segment_elt.pipeline.airflow_dbt import dbt_task_group
from segment_elt.pipeline.dag_tasks import DEFAULT_ARGS, finish, record_failure, start

MARTS = Asset("segment_elt_marts")

log = logging.getLogger(__name__)


@dag(
    dag_id=ROLLUPS,
    schedule=CronDataIntervalTimetable("*/10 * * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["segment", "rollups"],
    doc_md=__doc__,
    on_failure_callback=record_failure,
)
def segment_rollups():
    @task
    def plan(**context) -> dict:
        """Decide what this run builds: the new arrivals, or a backfill's day."""
        from segment_elt import db
        from segment_elt.pipeline import alerts, runs

        run = context["dag_run"]
        with db.connect() as conn:
            kind = runs.run_kind(run.run_type)
            planned = runs.plan_rollups(conn, kind, run.data_interval_start, run.data_interval_end)
            if kind == "backfill":  # skips at once: no record, no wait for the writer role
                log.warning("plan: %s", planned.reason)
                return planned.as_dict()
            start(conn, ROLLUPS, context, kind, planned)
            late = runs.late_by(conn)
        log.info("plan: %s; dbt vars %s", planned.reason, planned.dbt_vars)
        if late:
            log.warning("late: %s", late)
            alerts.notify(ROLLUPS, run.run_id, "late", late)
        return planned.as_dict()

    @task
    def check_freshness(**context) -> list[dict]:
        """Fail the run, and alert, when nothing landed for SEGMENT_ELT_RAW_STALE_HOURS (not in backfills)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from segment_elt.pipeline import alerts, freshness, runs

        if runs.run_kind(context["dag_run"].run_type) == "backfill":
            raise AirflowSkipException("a backfill rebuilds past days; freshness is about now")
        try:
            return [age.as_dict() for age in freshness.check()]
        except freshness.SourceStale as stale:
            alerts.notify(ROLLUPS, context["dag_run"].run_id, "stale", str(stale))
            raise

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def has_work(planned: dict) -> bool:
        """Skip dbt when there is nothing to build."""
        return planned["run_dbt"]

    planned = plan()
    dbt = dbt_task_group("dbt", "{{ ti.xcom_pull(task_ids='plan')['dbt_vars'] | tojson }}")

    @task(outlets=[MARTS], trigger_rule="none_failed")
    def publish(**context) -> dict:
        """Record the run's figures (rows staged, duration, mart sizes) and publish the marts."""
        return finish(ROLLUPS, context)

    @task(trigger_rule="none_failed")
    def outbound_sync() -> dict:
        """Send computed traits, audiences, account traits and moments that changed to Segment."""
        from segment_elt.outbound import sync

        return sync.sync_all()

    has_work(planned) >> dbt >> publish() >> outbound_sync()
    planned >> check_freshness()


segment_rollups()
