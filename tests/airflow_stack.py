"""The real Airflow scheduler: scheduler, DAG processor, triggerer and API server as `make up`
runs them, on the metadata database `airflow` next to DATABASE_URL, every DAG paused so that only
what a test or benchmark starts runs. Used by tests/dags/test_backfill_scheduler.py and
benchmarks/bench_backfill.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import requests

from segment_elt import db
from segment_elt.local.stack import BIN, airflow_ready, process


@dataclass(frozen=True)
class Run:
    run_id: str
    state: str
    airflow_s: float  # Airflow's start_date to end_date of the run
    wall_s: float  # from the trigger to the end, as the caller waited
    tasks: dict[str, tuple[str, float]]  # task_id -> (state, duration in seconds)


@dataclass(frozen=True)
class Stack:
    env: dict  # what the Airflow processes run with
    metadata_url: str  # the metadata database, for psycopg

    def airflow(self, *args: str) -> subprocess.CompletedProcess:
        """The `airflow` CLI against this stack; fails with its stderr."""
        done = subprocess.run(
            [str(BIN / "airflow"), *args], env={**os.environ, **self.env}, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stderr[-2000:]}"
        return done

    def backfill(self, dag_id: str, first: dt.date, last: dt.date, *more: str, timeout_s: float = 1800) -> float:
        """`airflow backfill create ... --max-active-runs 1` and wait until Airflow marks it complete;
        returns the wall time in seconds."""
        with db.connect(self.metadata_url) as conn:
            before = conn.execute("select count(*) from backfill where dag_id = %s", (dag_id,)).fetchone()[0]
        began = time.monotonic()
        self.airflow(
            "backfill",
            "create",
            "--dag-id",
            dag_id,
            "--from-date",
            first.isoformat(),
            "--to-date",
            last.isoformat(),
            "--max-active-runs",
            "1",
            *more,
        )
        self.airflow("dags", "unpause", dag_id)  # after: a backfill made first holds the days it names

        def completed() -> bool:
            with db.connect(self.metadata_url) as conn:
                rows = conn.execute(
                    "select completed_at is not null from backfill where dag_id = %s order by id", (dag_id,)
                ).fetchall()
            return len(rows) > before and rows[-1][0]

        wait_until(completed, f"the backfill of {dag_id} did not complete", timeout_s)
        return time.monotonic() - began

    def trigger(self, dag_id: str, conf: dict, timeout_s: float = 1800) -> tuple[str, float]:
        """A manual run with `conf`, waited for; returns its end state and wall time in seconds."""
        run = self.trigger_run(dag_id, conf, timeout_s)
        return run.state, run.wall_s

    def trigger_run(self, dag_id: str, conf: dict, timeout_s: float = 1800) -> Run:
        """A manual run with `conf`, waited for; its figures as Airflow recorded them."""

        def manual_runs() -> dict[str, str]:
            with db.connect(self.metadata_url) as conn:
                return dict(
                    conn.execute(
                        "select run_id, state from dag_run where dag_id = %s and run_type = 'manual'", (dag_id,)
                    ).fetchall()
                )

        before, began = manual_runs(), time.monotonic()
        self.airflow("dags", "trigger", dag_id, "--conf", json.dumps(conf))

        def ended() -> str | None:
            new = [state for run_id, state in manual_runs().items() if run_id not in before]
            return new and new[0] in ("success", "failed") and new[0]

        wait_until(ended, f"the manual run of {dag_id} did not end", timeout_s)
        wall = time.monotonic() - began
        (run_id,) = [run_id for run_id in manual_runs() if run_id not in before]
        return self.run(dag_id, run_id, wall)

    def unpause_after_catching_up(self, dag_id: str, timeout_s: float = 1800) -> Run:
        """Unpause a scheduled DAG and wait for the run the scheduler then makes for its latest interval
        (catchup is off), so that later manual runs do not queue behind it; returns that run."""
        self.airflow("dags", "unpause", dag_id)

        def scheduled() -> tuple[str, str] | None:
            with db.connect(self.metadata_url) as conn:
                return conn.execute(
                    "select run_id, state from dag_run where dag_id = %s and run_type = 'scheduled'", (dag_id,)
                ).fetchone()

        wait_until(
            lambda: (found := scheduled()) and found[1] in ("success", "failed"), "no scheduled run ended", timeout_s
        )
        return self.run(dag_id, scheduled()[0])

    def run(self, dag_id: str, run_id: str, wall_s: float = 0.0) -> Run:
        """A run's state, Airflow's start-to-end seconds and each task's (state, seconds) as Airflow recorded them."""
        with db.connect(self.metadata_url) as conn:
            state, seconds = conn.execute(
                "select state, extract(epoch from end_date - start_date) from dag_run"
                " where dag_id = %s and run_id = %s",
                (dag_id, run_id),
            ).fetchone()
            tasks = conn.execute(
                "select task_id, state, coalesce(duration, 0) from task_instance where dag_id = %s and run_id = %s",
                (dag_id, run_id),
            ).fetchall()
        return Run(run_id, state, float(seconds or 0), wall_s, {task: (st, float(d)) for task, st, d in tasks})

    def runs(self, dag_id: str) -> dict[dt.date, tuple[str, float, int]]:
        """Each backfill run by its day: (state, seconds from its start to its end, clear number)."""
        with db.connect(self.metadata_url) as conn:
            rows = conn.execute(
                "select logical_date::date, state, extract(epoch from end_date - start_date), clear_number"
                " from dag_run where dag_id = %s and run_type = 'backfill'",
                (dag_id,),
            ).fetchall()
        return {day: (state, float(seconds or 0), clears) for day, state, seconds, clears in rows}

    def task_states(self, dag_id: str) -> dict[tuple[dt.date, str], str]:
        """(day, task_id) -> state of every task of the backfill runs."""
        with db.connect(self.metadata_url) as conn:
            rows = conn.execute(
                "select r.logical_date::date, ti.task_id, ti.state from task_instance ti"
                " join dag_run r on r.dag_id = ti.dag_id and r.run_id = ti.run_id"
                " where ti.dag_id = %s and r.run_type = 'backfill'",
                (dag_id,),
            ).fetchall()
        return {(day, task): state for day, task, state in rows}


def wait_until(ready, failure: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{failure} within {timeout_s:.0f} s; see the logs under SEGMENT_ELT_LOCAL_DIR")
        time.sleep(1)


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return True


@contextmanager
def scheduler_stack(database_url: str, dag_id: str) -> Iterator[Stack]:
    """The stack, up once the API server answers and the DAG processor has stored `dag_id`.
    AIRFLOW_PORT and SEGMENT_ELT_LOCAL_DIR (logs, AIRFLOW_HOME) come from the environment."""
    env = {**airflow_ready(database_url), "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    stack = Stack(env, env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", ""))
    port = env["AIRFLOW__API__PORT"]
    with ExitStack() as running:
        for name, args in (
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
            ("triggerer", ["triggerer"]),
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", port]),
        ):
            running.enter_context(process([str(BIN / "airflow"), *args], env, name))
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/api/v2/version"), "the API server did not answer", 600)

        def parsed() -> bool:
            with db.connect(stack.metadata_url) as conn:
                return conn.execute("select 1 from serialized_dag where dag_id = %s", (dag_id,)).fetchone() is not None

        wait_until(parsed, f"the DAG processor did not store {dag_id}")
        yield stack
