"""Pieces the DAG files share: default args, the closing task's body, the failure callback."""

from __future__ import annotations

import datetime as dt
import os

DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": int(os.environ.get("SEGMENT_ELT_DAG_RETRIES", 2)),
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=5),
}


def finish(dag_id: str, context: dict, detail: dict | None = None) -> dict:
    """Mark the run successful and log its figures."""
    from segment_elt import db, pipeline

    with db.connect() as conn:
        return pipeline.finish_run(conn, dag_id, context["dag_run"].run_id, "success",
                                   {**(detail or {}), "marts": pipeline.mart_counts(conn)})


def record_failure(context: dict) -> None:
    """DAG failure callback: close the run's record as failed (the next run catches up)."""
    from segment_elt import db, pipeline

    run = context["dag_run"]
    with db.connect() as conn:
        pipeline.finish_run(conn, run.dag_id, run.run_id, "failed", {"reason": str(context.get("reason", ""))[:500]})
