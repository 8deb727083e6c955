"""
### segment_privacy

Carries out the privacy deletions recorded with `segment-elt privacy delete` or on the Segment
page (docs/privacy.md), asynchronously as Segment's own regulations run: hourly, and at once when
the page records a deletion (it triggers this DAG through Airflow's REST API).

`erase` removes every unfinished deletion's people from the archive, the staged rows, the
staging model, the rejects log and the outbound record (regulations `erasing`, then
`rebuilding`), resuming any that stopped midway; nothing pending: the run ends there. `rebuild`
then holds the dbt writer role (its run record, as the other writer DAGs do, in pool
`segment_dbt`) for one full rebuild of every model downstream of staging, and marks them `done`.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from segment_elt.dag_ids import PRIVACY
from segment_elt.pipeline.airflow_dbt import POOL
from segment_elt.pipeline.dag_tasks import DEFAULT_ARGS, record_failure, start

log = logging.getLogger(__name__)


@dag(
    dag_id=PRIVACY,
    schedule=CronDataIntervalTimetable("45 * * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["segment", "privacy"],
    doc_md=__doc__,
    on_failure_callback=record_failure,
)
def segment_privacy():
    @task.short_circuit
    def erase() -> bool:
        """Steps 1 and 2 of every unfinished deletion; whether any waits for its rebuild."""
        from segment_elt.pipeline import privacy_runs

        return privacy_runs.erase_pending()

    @task(pool=POOL)
    def rebuild(**context) -> dict:
        """Hold the writer role, rebuild every model downstream of staging, mark the deletions done."""
        from segment_elt import db
        from segment_elt.pipeline import privacy_runs

        with db.connect() as conn:
            start(conn, PRIVACY, context, "privacy")
        return privacy_runs.rebuild_and_finish(PRIVACY, context["dag_run"].run_id)

    erase() >> rebuild()


segment_privacy()
