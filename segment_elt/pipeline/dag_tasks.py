"""Pieces the DAG files share: default args, opening and closing a run's record, the failure callback."""

from __future__ import annotations

import datetime as dt

from segment_elt.settings import settings_while_parsing

DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": settings_while_parsing().dag_retries,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=5),
}


def start(conn, dag_id: str, context: dict, run_type: str, plan=None) -> None:
    """Open the run's record (segment_elt.pipeline.runs.start_run), asking Airflow which runs still run."""
    from segment_elt.pipeline import runs

    ti = context["ti"]

    def run_is_live(other_dag_id: str, run_id: str) -> bool:
        return ti.get_dr_count(dag_id=other_dag_id, run_ids=[run_id], states=["queued", "running"]) > 0

    runs.start_run(conn, dag_id, context["dag_run"].run_id, run_type, plan, run_is_live=run_is_live)


def finish(dag_id: str, context: dict, detail: dict | None = None) -> dict:
    """Mark the run successful and log its figures."""
    from segment_elt import db
    from segment_elt.pipeline import runs

    with db.connect() as conn:
        return runs.finish_run(
            conn, dag_id, context["dag_run"].run_id, "success", {**(detail or {}), "marts": runs.mart_counts(conn)}
        )


def record_failure(context: dict) -> None:
    """DAG failure callback: close the run's record as failed if it is still open (the next run
    catches up) and alert the configured webhook, naming what failed: the run's failed dbt build
    in one line with dbt's message, else Airflow's reason. A record already closed as success stays as it is:
    a failed outbound sync after a good dbt build is recorded per connection in control.outbound_runs."""
    from segment_elt import db
    from segment_elt.pipeline import alerts, dbt_build, runs

    run, reason = context["dag_run"], str(context.get("reason", ""))[:500]
    try:
        with db.connect() as conn:
            reason = dbt_build.failure_of(conn, run.dag_id, run.run_id) or reason
            runs.finish_run(conn, run.dag_id, run.run_id, "failed", {"reason": reason})
    finally:
        alerts.notify(run.dag_id, run.run_id, "failed", reason)
