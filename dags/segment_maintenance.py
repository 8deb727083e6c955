"""
### segment_maintenance

Daily: create raw.segment_events' day partitions ahead (and of the days whose rows landed in its
default partition), then drop the days older than the retention (SEGMENT_ELT_RETENTION_DAYS,
default 30) once the dbt staging model holds every row of them and their archive objects are
intact; every kept row is counted with its reason (not yet in staging, archive object missing or
corrupt, in a day kept whole). Then VACUUM (ANALYZE) the default partition.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from segment_elt.dag_ids import MAINTENANCE
from segment_elt.pipeline.dag_tasks import DEFAULT_ARGS

log = logging.getLogger(__name__)


@dag(
    dag_id=MAINTENANCE,
    schedule=CronDataIntervalTimetable("30 3 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["segment", "maintenance"],
    doc_md=__doc__,
)
def segment_maintenance():
    @task
    def make_partitions() -> int:
        """Create the day partitions of today and the days ahead, and of unexpired days in the default partition."""
        from segment_elt import db
        from segment_elt.pipeline import maintenance
        from segment_elt.settings import settings

        with db.connect(timeout_s=600) as conn:
            made = maintenance.make_partitions(conn, settings().retention_days)
        log.info("created %d day partitions", made)
        return made

    @task
    def prune() -> dict:
        """Drop the days past the retention whose rows staging consumed and the archive holds intact."""
        from segment_elt import db
        from segment_elt.ingest.archive import open_archive
        from segment_elt.pipeline import maintenance
        from segment_elt.settings import settings

        current = settings()
        with db.connect(timeout_s=600) as conn:
            done = maintenance.prune(conn, open_archive(current.archive_url), current.retention_days)
        log.info("pruned: %s", done.as_dict())
        return done.as_dict()

    @task
    def vacuum() -> None:
        """VACUUM (ANALYZE) the default partition of raw.segment_events."""
        from segment_elt import db
        from segment_elt.pipeline import maintenance

        with db.connect(timeout_s=3600) as conn:
            maintenance.vacuum(conn)

    make_partitions() >> prune() >> vacuum()


segment_maintenance()
