"""
### segment_replay

Re-land the archived raw requests of one connection, received between `start_date` and
`end_date` (inclusive, UTC), into staging, then rebuild what they touch. Idempotent: events
already staged stay as they are, so a replay after an allowlist change brings older events into
the rollups exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import Param, dag, task

from segment_elt.dag_ids import REPLAY
from segment_elt.pipeline.airflow_dbt import dbt_tasks
from segment_elt.pipeline.dag_tasks import DEFAULT_ARGS, finish, record_failure, start

log = logging.getLogger(__name__)


@dag(
    dag_id=REPLAY,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["segment", "replay"],
    doc_md=__doc__,
    on_failure_callback=record_failure,
    params={
        "connection_id": Param(
            "",
            type="string",
            minLength=1,
            maxLength=64,
            pattern="^[A-Za-z0-9_-]+$",
            description="the connection to replay",
        ),
        "start_date": Param("", type="string", format="date", description="first receive day, YYYY-MM-DD"),
        "end_date": Param("", type="string", format="date", description="last receive day, YYYY-MM-DD"),
    },
)
def segment_replay():
    @task
    def reland(params: dict, **context) -> dict:
        """List the archive under the connection's day prefixes and re-land each request."""
        from segment_elt import db
        from segment_elt.ingest.archive import open_archive
        from segment_elt.pipeline import replay
        from segment_elt.settings import settings

        with db.connect(timeout_s=60) as conn:
            org, first, last = replay.validate(conn, params["connection_id"], params["start_date"], params["end_date"])
            start(conn, REPLAY, context, "manual")
            done = replay.replay(conn, open_archive(settings().archive_url), params["connection_id"], org, first, last)
        log.info("replayed: %s", done.as_dict())
        return {
            "replayed": done.as_dict(),
            "dbt_vars": {
                "reconcile_connection_id": params["connection_id"],
                "received_from": first.isoformat(),
                "received_to": last.isoformat(),
            },
        }

    @task(trigger_rule="none_failed")
    def publish(relanded: dict, **context) -> dict:
        """Record the run's figures."""
        return finish(REPLAY, context, relanded["replayed"])

    relanded = reland()
    relanded >> dbt_tasks("{{ ti.xcom_pull(task_ids='reland')['dbt_vars'] | tojson }}").build >> publish(relanded)


segment_replay()
