"""The real Airflow scheduler: scheduler, DAG processor, triggerer and API server as `make up` runs
them, on the metadata database `airflow` next to DATABASE_URL, every DAG paused so that only what a test
or benchmark starts runs. With `executor="CeleryExecutor"` the tasks run on Celery workers behind
Debian's redis-server, with the Celery settings docker-compose.yaml gives its Airflow services.
Used by tests/dags/test_backfill_scheduler.py, tests/dags/test_celery.py and
benchmarks/bench_backfill.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psutil
import redis
import requests
import yaml

from segment_elt import db
from segment_elt.local.airflow_env import postgres_metadata_url
from segment_elt.local.embedded import free_port
from segment_elt.local.stack import BIN, airflow_ready, process
from segment_elt.settings import settings

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yaml"


@dataclass(frozen=True)
class Run:
    run_id: str
    state: str
    airflow_s: float  # Airflow's start_date to end_date of the run
    wall_s: float  # from the trigger to the end, as the caller waited
    tasks: dict[str, tuple[str, float]]  # task_id -> (state, duration in seconds)
    timeline: dict[str, tuple[float, float]]  # task_id -> (start, end) in seconds from the run's start


@dataclass(frozen=True)
class Stack:
    env: dict  # what the Airflow processes run with
    metadata_url: str  # the metadata database, for psycopg
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)  # Celery workers by name

    def worker_log(self, name: str) -> str:
        return (settings().local_dir / "logs" / f"{name}.log").read_text(errors="replace")

    def worker_of(self, celery_task_id: str) -> str | None:
        """The worker whose log shows it received the Celery task (an Airflow task instance's
        external_executor_id)."""
        return next((name for name in self.workers if celery_task_id in self.worker_log(name)), None)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and every process under it, as when its machine dies."""
        root = psutil.Process(self.workers[name].pid)
        for proc in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.workers[name].wait(30)

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

    def trigger_run(self, dag_id: str, conf: dict, timeout_s: float = 1800) -> Run:
        """A manual run with `conf`, waited for; its figures as Airflow recorded them."""
        began = time.monotonic()
        run_id = self.start_run(dag_id, conf)
        self.wait_run(dag_id, run_id, timeout_s)
        return self.run(dag_id, run_id, time.monotonic() - began)

    def unpause_after_catching_up(self, dag_id: str, timeout_s: float = 1800) -> Run:
        """Unpause a scheduled DAG and wait for the run the scheduler then makes for its latest interval
        (catchup is off), so that later manual runs do not queue behind it; returns that run."""
        self.airflow("dags", "unpause", dag_id)

        def scheduled() -> tuple[str, str] | None:
            with db.connect(self.metadata_url) as conn:
                return conn.execute(
                    "select run_id, state from dag_run where dag_id = %s and run_type = 'scheduled'", (dag_id,)
                ).fetchone()

        found = wait_until(
            lambda: (row := scheduled()) and row[1] in ("success", "failed") and row,
            "no scheduled run ended",
            timeout_s,
        )
        return self.run(dag_id, found[0])

    def run(self, dag_id: str, run_id: str, wall_s: float = 0.0) -> Run:
        """A run's state, Airflow's start-to-end seconds and each task's (state, seconds) as Airflow recorded them."""
        with db.connect(self.metadata_url) as conn:
            state, seconds = conn.execute(
                "select state, extract(epoch from end_date - start_date) from dag_run"
                " where dag_id = %s and run_id = %s",
                (dag_id, run_id),
            ).fetchone()
            tasks = conn.execute(
                "select ti.task_id, ti.state, coalesce(ti.duration, 0),"
                " extract(epoch from ti.start_date - r.start_date), extract(epoch from ti.end_date - r.start_date)"
                " from task_instance ti join dag_run r on (r.dag_id, r.run_id) = (ti.dag_id, ti.run_id)"
                " where ti.dag_id = %s and ti.run_id = %s",
                (dag_id, run_id),
            ).fetchall()
        return Run(
            run_id,
            state,
            float(seconds or 0),
            wall_s,
            {task: (st, float(d)) for task, st, d, _, _ in tasks},
            {task: (float(b), float(e)) for task, _, _, b, e in tasks if b is not None and e is not None},
        )

    def trigger(self, dag_id: str, conf: dict, timeout_s: float = 1800) -> tuple[str, float]:
        """A manual run with `conf`, waited for; returns its end state and wall time in seconds."""
        began = time.monotonic()
        run_id = self.start_run(dag_id, conf)
        return self.wait_run(dag_id, run_id, timeout_s), time.monotonic() - began

    def start_run(self, dag_id: str, conf: dict) -> str:
        """`airflow dags trigger` with a run id of its own, which it returns; the DAG is unpaused
        after, so that the scheduler starts the run (and the DAG's scheduled runs from then on)."""
        run_id = f"manual__{dag_id}__{time.time_ns()}"
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
        self.airflow("dags", "unpause", dag_id)
        return run_id

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 1800) -> str:
        """The end state of a run (success or failed), once it has one."""

        def ended() -> str | None:
            with db.connect(self.metadata_url) as conn:
                row = conn.execute(
                    "select state from dag_run where dag_id = %s and run_id = %s", (dag_id, run_id)
                ).fetchone()
            return row and row[0] in ("success", "failed") and row[0]

        wait_until(ended, f"the run {run_id} of {dag_id} did not end", timeout_s)
        return ended()

    def task_instances(self, dag_id: str, run_id: str) -> list[tuple[str, str | None, str | None, int]]:
        """(task_id, state, external_executor_id, try_number) of every task instance of one run."""
        with db.connect(self.metadata_url) as conn:
            return conn.execute(
                "select task_id, state, external_executor_id, try_number from task_instance"
                " where dag_id = %s and run_id = %s order by task_id",
                (dag_id, run_id),
            ).fetchall()

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


def wait_until(ready, failure: str, timeout_s: float = 180):
    """Poll `ready()` each second until it returns something true, and return that."""
    deadline = time.monotonic() + timeout_s
    while not (found := ready()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{failure} within {timeout_s:.0f} s; see the logs under SEGMENT_ELT_LOCAL_DIR")
        time.sleep(1)
    return found


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return True


def compose_celery_env(metadata_url: str, redis_port: int) -> dict[str, str]:
    """The executor and Celery settings of docker-compose.yaml's Airflow services, pointed at the
    redis-server on `redis_port` and the metadata database here instead of the compose hosts."""
    compose_env = yaml.safe_load(COMPOSE.read_text())["x-airflow"]["environment"]
    env = {key: value for key, value in compose_env.items() if key.startswith("AIRFLOW__CELERY__")}
    env["AIRFLOW__CORE__EXECUTOR"] = compose_env["AIRFLOW__CORE__EXECUTOR"]
    broker = urlparse(env["AIRFLOW__CELERY__BROKER_URL"])
    env["AIRFLOW__CELERY__BROKER_URL"] = broker._replace(netloc=f"127.0.0.1:{redis_port}").geturl()
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + metadata_url
    return env


@contextmanager
def redis_server() -> Iterator[int]:
    """Debian's redis-server on a free loopback port, in memory only; yields the port."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: apt-get install redis-server (.ci/run installs it)")
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with process(args, {}, "redis"):
        client = redis.Redis(port=port)

        def pong() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_until(pong, "redis-server did not answer", 30)
        yield port


@contextmanager
def scheduler_stack(
    database_url: str, *dag_ids: str, executor: str = "LocalExecutor", celery_workers: int = 2
) -> Iterator[Stack]:
    """The stack, up once the API server answers and the DAG processor has stored `dag_ids`;
    with the CeleryExecutor, `celery_workers` workers named worker-1.. run the tasks.
    AIRFLOW_PORT and SEGMENT_ELT_LOCAL_DIR (logs, AIRFLOW_HOME) come from the environment."""
    # a metadata database of its own: runs, pauses and DAG versions of earlier stacks on the same
    # server (other tests) would otherwise be scheduled here
    fresh = f"airflow_{uuid.uuid4().hex[:12]}"
    with db.connect(database_url) as conn:
        conn.execute(f'create database "{fresh}"')
    own = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_metadata_url(database_url).rsplit("/", 1)[0] + "/" + fresh}
    saved = {key: os.environ.get(key) for key in own}
    os.environ.update(own)
    try:
        env = {**airflow_ready(database_url), **own, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    stack = Stack(env, env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", ""))
    port = env["AIRFLOW__API__PORT"]
    with ExitStack() as running:
        if executor == "CeleryExecutor":
            env.update(compose_celery_env(stack.metadata_url, running.enter_context(redis_server())))
            env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = "2"  # two cores shared by the whole machine
            # sending a task to Redis is given 1 s by default; on a loaded machine it took longer
            # and the scheduler failed the task instance without it ever reaching a worker
            env["AIRFLOW__CELERY__OPERATION_TIMEOUT"] = "15"
        else:
            env["AIRFLOW__CORE__EXECUTOR"] = executor
        for name, args in (
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
            ("triggerer", ["triggerer"]),
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", port]),
        ):
            running.enter_context(process([str(BIN / "airflow"), *args], env, name))
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/api/v2/version"), "the API server did not answer", 600)
        for number in range(1, celery_workers + 1 if executor == "CeleryExecutor" else 1):
            name = f"worker-{number}"
            worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            args = [str(BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{name}@%h"]
            stack.workers[name] = running.enter_context(process([*args, "--without-mingle"], worker_env, name))

        def parsed() -> bool:
            with db.connect(stack.metadata_url) as conn:
                stored = conn.execute(
                    "select count(*) from serialized_dag where dag_id = any(%s)", (list(dag_ids),)
                ).fetchone()[0]
            return stored == len(set(dag_ids))

        wait_until(parsed, f"the DAG processor did not store {', '.join(dag_ids)}")
        yield stack
