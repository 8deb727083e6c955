"""`segment-elt pipeline run-once`: the segment_rollups DAG once, in this process.

It runs the real DAG through Airflow's `dag.test()` (as `airflow dags test` does: every task in
order, in this process, recorded in Airflow's metadata database), against the Airflow configured
in the environment (AIRFLOW_HOME and its settings; `make up` and `make demo` set these up), and
returns the run's state and the figures it recorded in control.pipeline_runs.
Airflow's task logs go to stderr, so stdout holds only the command's own output.
"""

from __future__ import annotations

import contextlib
import os
import sys

from segment_elt import db
from segment_elt.dag_ids import ROLLUPS
from segment_elt.errors import UserError
from segment_elt.settings import settings


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to stdout, at the file-descriptor level too (Airflow's log handlers
    hold the stream they were configured with), to stderr for the duration."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            stream.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for stream in (sys.stdout, sys.__stdout__):
            if stream is not None:
                stream.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_rollups_once() -> tuple[str, dict]:
    """Run segment_rollups once; returns (its final state, its recorded figures)."""
    from airflow.dag_processing.dagbag import DagBag
    from sqlalchemy.exc import OperationalError

    path = settings().dags_dir / f"{ROLLUPS}.py"
    with _stdout_to_stderr():
        bag = DagBag(dag_folder=str(path))
        if ROLLUPS not in bag.dags:
            errors = "; ".join(str(error).strip().splitlines()[-1] for error in bag.import_errors.values())
            raise UserError(f"{ROLLUPS} did not load from {path}" + (f" ({errors})" if errors else ""))
        try:
            run = bag.dags[ROLLUPS].test()
        except OperationalError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
            raise UserError(
                f"Airflow's metadata database is not ready ({first}); run `airflow db migrate` with "
                "this AIRFLOW_HOME (make up does it)"
            ) from None
    with db.connect() as conn:
        row = conn.execute(
            "select status, staged_rows, extract(epoch from finished_at - started_at), detail"
            " from control.pipeline_runs where dag_id = %s and run_id = %s order by started_at desc limit 1",
            (ROLLUPS, run.run_id),
        ).fetchone()
    figures = {"run_id": run.run_id}
    if row is not None:
        status, staged, seconds, detail = row
        figures.update(
            recorded_status=status,
            staged_rows=staged,
            duration_s=round(float(seconds), 1) if seconds is not None else None,
            **(detail or {}),
        )
    return str(getattr(run.state, "value", run.state)), figures
