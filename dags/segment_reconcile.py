"""
### segment_reconcile

Re-resolve every stored event of one connection under the current identity rules and app
accounts/contacts (after an import or a rules edit), and rebuild the rollups they touch. The
result equals a full rebuild. `segment-elt connections reconcile CONNECTION_ID` triggers it.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

from segment_elt.dag_ids import RECONCILE
from segment_elt.pipeline.airflow_dbt import dbt_tasks
from segment_elt.pipeline.dag_tasks import DEFAULT_ARGS, finish, record_failure, start


@dag(
    dag_id=RECONCILE,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["segment", "identity"],
    doc_md=__doc__,
    on_failure_callback=record_failure,
    params={
        "connection_id": Param(
            "",
            type="string",
            minLength=1,
            maxLength=64,
            pattern="^[A-Za-z0-9_-]+$",
            description="the connection to re-resolve",
        ),
    },
)
def segment_reconcile():
    @task
    def check(params: dict, **context) -> dict:
        """Check the connection is live (not deleted); the dbt vars of the reconcile build."""
        from segment_elt import db
        from segment_elt.control import connections

        with db.connect() as conn:
            connections.require_live(conn, params["connection_id"])
            start(conn, RECONCILE, context, "manual")
        return {"dbt_vars": {"reconcile_connection_id": params["connection_id"]}}

    @task(trigger_rule="none_failed")
    def publish(**context) -> dict:
        """Record the run's figures."""
        return finish(RECONCILE, context)

    check() >> dbt_tasks("{{ ti.xcom_pull(task_ids='check')['dbt_vars'] | tojson }}").build >> publish()


segment_reconcile()
