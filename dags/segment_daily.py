"""
### segment_daily

Every day at 00:30 UTC: rebuild the day before from everything stored, in one `dbt build`
(`rebuild_from`/`rebuild_to`): late events land in their day and the time-relative indicators are
refreshed. This is the DAG to backfill, one run per day:
`airflow backfill create --dag-id segment_daily --from-date 2026-10-01 --to-date 2026-10-31 --max-active-runs 1`;
a backfill run also rebuilds the days of the runs still queued after it (up to
SEGMENT_ELT_BACKFILL_DAYS_PER_BUILD days in one build), and those runs then end at once. A
manual run with `start_date`/`end_date` rebuilds the whole range in one build. A day whose
events may have been received before the staging retention (SEGMENT_ELT_RETENTION_DAYS) is first
re-landed from the archive (as segment_replay does, idempotently). One writer at a time, as for
segment_rollups; a failed run fails alone (and alerts), its days are then rebuilt one per run,
and it is re-run by clearing it.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from segment_elt.dag_ids import DAILY
from segment_elt.pipeline.airflow_dbt import dbt_tasks
from segment_elt.pipeline.dag_tasks import DEFAULT_ARGS, finish, record_failure, start

log = logging.getLogger(__name__)


@dag(
    dag_id=DAILY,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["segment", "daily", "backfill"],
    doc_md=__doc__,
    on_failure_callback=record_failure,
    params={
        "start_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="manual runs: first event day to rebuild, YYYY-MM-DD (else the run's day)",
        ),
        "end_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="manual runs: last event day to rebuild, YYYY-MM-DD",
        ),
    },
)
def segment_daily():
    @task.short_circuit
    def plan(params: dict, **context) -> dict | None:
        """Decide the event days, take the writer role, and re-land from the archive what retention
        may have pruned from staging. A backfill run whose day an earlier run already rebuilt
        returns None: Airflow skips the rest of the run."""
        from airflow.sdk.exceptions import AirflowRescheduleException

        from segment_elt import db
        from segment_elt.ingest.archive import open_archive
        from segment_elt.pipeline import daily, runs
        from segment_elt.settings import settings

        run = context["dag_run"]
        kind = runs.run_kind(run.run_type)
        if settles_at := daily.settles_at(kind, run.data_interval_end):
            log.info("scheduled run: waiting until %s for the day's last arrivals", settles_at)
            raise AirflowRescheduleException(settles_at)
        days = daily.days_of_run(
            run.data_interval_start, run.data_interval_end, params.get("start_date"), params.get("end_date")
        )
        with db.connect(timeout_s=60) as conn:
            start(conn, DAILY, context, kind, runs.Plan(True, days.dbt_vars()))
            if kind == "backfill":
                if covered_by := daily.covering_run(conn, run.run_id, days.first):
                    log.info(
                        "day %s was rebuilt by run %s (it took this queued run's day into its build): nothing to do",
                        days.first,
                        covered_by,
                    )
                    runs.finish_run(conn, DAILY, run.run_id, "skipped", {"rebuilt_by": covered_by})
                    return None
                days = _with_queued_neighbours(conn, context, days.first)
            log.info("rebuilding event days %s..%s (%d days)", days.first, days.last, days.count)
            receive_days = daily.receive_days_to_reland(days, settings().retention_days)
            relanded = None
            if receive_days is None:
                log.info("all events of these days are in staging: nothing to re-land")
            else:
                done = daily.reland(conn, open_archive(settings().archive_url), receive_days)
                relanded = {
                    "receive_days": [receive_days.first.isoformat(), receive_days.last.isoformat()],
                    **done.as_dict(),
                }
                log.info(
                    "re-landed receive days %s..%s from the archive: %d objects listed (%d already staged), "
                    "%d events read, %d new",
                    receive_days.first,
                    receive_days.last,
                    done.objects,
                    done.already_staged,
                    done.events,
                    done.new,
                )
        return {"dbt_vars": days.dbt_vars(), "days": days.count, "relanded": relanded}

    @task(trigger_rule="none_failed")
    def publish(planned: dict, **context) -> dict:
        """Log days done / days total with the events of each day, and record the run's figures."""
        from segment_elt import db
        from segment_elt.pipeline import daily

        days = daily.days_of_run(None, None, planned["dbt_vars"]["rebuild_from"], planned["dbt_vars"]["rebuild_to"])
        with db.connect() as conn:
            counts = daily.events_per_day(conn, days)
        for line in daily.progress_lines(counts):
            log.info("rebuilt %s", line)
        return finish(DAILY, context, {"days": days.count, "events_per_day": counts, "relanded": planned["relanded"]})

    planned = plan()
    (planned >> dbt_tasks("{{ ti.xcom_pull(task_ids='plan')['dbt_vars'] | tojson }}").build >> publish(planned))


def _with_queued_neighbours(conn, context: dict, day: dt.date):
    """The days a backfill run of `day` rebuilds: with the contiguous days whose backfill runs
    are still queued (segment_elt.pipeline.daily.backfill_days), recorded on the run's record."""
    from segment_elt.pipeline import daily, runs
    from segment_elt.settings import settings

    ti, run_id = context["ti"], context["dag_run"].run_id
    most = settings().backfill_days_per_build

    def queued(other: dt.date) -> bool:
        midnight = dt.datetime.combine(other, dt.time(), tzinfo=dt.UTC)
        return ti.get_dr_count(dag_id=DAILY, logical_dates=[midnight], states=["queued"]) > 0

    window = daily.Days(day - dt.timedelta(days=most - 1), day + dt.timedelta(days=most - 1))
    days = daily.backfill_days(day, queued, daily.failed_days(conn, window), most)
    if days.count > 1:
        covered = [d.isoformat() for d in days if d != day]
        log.info(
            "backfill: this run also rebuilds the days of %d queued runs (%s..%s); they will end at once",
            len(covered),
            days.first,
            days.last,
        )
        runs.widen_run(conn, DAILY, run_id, days.dbt_vars(), {"covered": covered})
    return days


segment_daily()
