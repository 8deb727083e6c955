"""
### segment_rollups

Every SEGMENT_ELT_ROLLUPS_EVERY_MINUTES (default 10): take everything staged since the last
successful run, build the dbt project in one `dbt build` (staging -> identity resolution -> marts;
each model also shows as a task of its own under `dbt`), record the run, then send what changed
back to Segment. Backfill segment_daily instead: backfill runs of this DAG skip at once.
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
from airflow.timetables.interval import DeltaDataIntervalTimetable

from segment_elt.dag_ids import ROLLUPS
from segment_elt.pipeline.airflow_dbt import dbt_tasks
from segment_elt.pipeline.dag_tasks import DEFAULT_ARGS, finish, record_failure, start
from segment_elt.settings import settings, settings_while_parsing

MARTS = Asset("segment_elt_marts")

log = logging.getLogger(__name__)


@dag(
    dag_id=ROLLUPS,
    schedule=DeltaDataIntervalTimetable(dt.timedelta(minutes=settings_while_parsing().rollups_every_minutes)),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["segment", "rollups"],
    doc_md=__doc__,
    on_failure_callback=record_failure,
)
def segment_rollups():
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def plan(**context) -> dict | None:
        """Decide what this run builds (the new arrivals) and open its record; returns nothing, and the
        build is skipped, when there is nothing to build."""
        from segment_elt import db
        from segment_elt.pipeline import alerts, runs

        run = context["dag_run"]
        with db.connect() as conn:
            kind = runs.run_kind(run.run_type)
            planned = runs.plan_rollups(conn, kind, run.data_interval_start, run.data_interval_end)
            if kind == "backfill":  # skips at once: no record, no wait for the writer role
                log.warning("plan: %s", planned.reason)
                return None
            start(conn, ROLLUPS, context, kind, planned)
            late = runs.late_by(conn)
        if not planned.run_dbt:  # the record closes here; dbt_build is skipped
            finish(ROLLUPS, context)
        log.info("plan: %s; dbt vars %s", planned.reason, planned.dbt_vars)
        if late:
            log.warning("late: %s", late)
            alerts.notify(ROLLUPS, run.run_id, "late", late)
        return planned.as_dict() if planned.run_dbt else None

    @task
    def check_freshness(**context) -> list[dict]:
        """Fail the run, and alert, when nothing landed for SEGMENT_ELT_RAW_STALE_HOURS (not in backfills).
        dbt's whole check runs in the first scheduled run of each hour, else only when raw is not fresh."""
        from airflow.sdk.exceptions import AirflowSkipException

        from segment_elt.pipeline import alerts, freshness, runs

        run = context["dag_run"]
        kind = runs.run_kind(run.run_type)
        if kind == "backfill":
            raise AirflowSkipException("a backfill rebuilds past days; freshness is about now")
        first_of_hour = kind == "scheduled" and run.data_interval_end.minute < settings().rollups_every_minutes
        try:
            return [age.as_dict() for age in freshness.check_for_run(full=first_of_hour)]
        except freshness.SourceStale as stale:
            alerts.notify(ROLLUPS, run.run_id, "stale", str(stale))
            raise

    dbt = dbt_tasks(
        "{{ ti.xcom_pull(task_ids='plan')['dbt_vars'] | tojson }}",
        outlets=[MARTS],  # the marts changed: DAGs of your own can be scheduled on them
        on_success=lambda context, built: finish(ROLLUPS, context, {"dbt": built}),
    )

    @task(trigger_rule="none_failed")
    def outbound_sync() -> dict:
        """Send computed traits, audiences, account traits and moments that changed to Segment."""
        from segment_elt.outbound import sync

        return sync.sync_all()

    plan() >> dbt.build >> outbound_sync()
    check_freshness()


segment_rollups()
