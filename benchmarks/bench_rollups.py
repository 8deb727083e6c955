"""What a segment_rollups run costs under the real scheduler (scheduler, DAG processor, triggerer
and API server as `make up` runs them, LocalExecutor): Airflow's start-to-end seconds of a manual
run with 10,000 new events and with nothing new, beside a plain in-process `dbt build` of the same
amount of new data; then the same run with 10 more audience models in models/audiences/.

The project (dags/, plugins/, dbt_project/) is copied to a temporary directory so the audience
models can be added without touching the checkout. BENCH_ROLLUPS_EVENTS scales the batch.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.bench_pipeline import bench_org, generate
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.dag_ids import ROLLUPS
from segment_elt.local import embedded
from segment_elt.pipeline.transform import run_dbt
from segment_elt.settings import settings
from tests.airflow_stack import Run, scheduler_stack, wait_until

EVENTS_END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # where each landed batch's 2 days end

EVENTS = int(os.environ.get("BENCH_ROLLUPS_EVENTS", "10000"))
AUDIENCES = 10
LIMIT_NEW_S, LIMIT_IDLE_S, LIMIT_AUDIENCES = 40, 20, 1.10


def _copy_project(to: Path) -> None:
    source = settings().project_dir
    for part in ("dags", "plugins", "dbt_project", "receiver"):
        shutil.copytree(
            source / part, to / part, ignore=shutil.ignore_patterns("target", "logs", "__pycache__", "dbt_packages")
        )


def _add_audiences(project: Path) -> None:
    """AUDIENCES copies of the power_users audience under other names, as an analyst would add them."""
    audiences = project / "dbt_project" / "models" / "audiences"
    template = (audiences / "power_users.sql").read_text()
    for n in range(AUDIENCES):
        (audiences / f"bench_audience_{n}.sql").write_text(template)


def _task_count(stack, dag_id: str) -> int:
    with db.connect(stack.metadata_url) as conn:
        data = conn.execute(
            "select data from serialized_dag where dag_id = %s order by last_updated desc limit 1", (dag_id,)
        ).fetchone()[0]
    return len((data or {}).get("dag", {}).get("tasks", []))


def _where_time_goes(run: Run) -> str:
    """Each worker task's start and end from the run's start, and when the last per-model task ended."""
    spans = [
        f"{task} {run.timeline[task][0]:.1f}-{run.timeline[task][1]:.1f}s"
        for task in ("plan", "check_freshness", "dbt_build", "outbound_sync")
        if task in run.timeline
    ]
    models = [end for task, (_, end) in run.timeline.items() if task.startswith("dbt.")]
    if models:
        spans.append(f"last model task ended {max(models):.1f}s")
    return ", ".join(spans)


def _land(url: str, cid: str, start: int) -> None:
    with db.connect(url, timeout_s=600) as conn:
        generate(conn, cid, start, start + EVENTS, EVENTS_END, days=2, history=False)


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollups-"))
    project = tmp / "project"
    _copy_project(project)
    saved = dict(os.environ)
    os.environ.update(
        SEGMENT_ELT_LOCAL_DIR=str(tmp / "local"),
        SEGMENT_ELT_PROJECT_DIR=str(project),
        ARCHIVE_URL=(tmp / "archive").as_uri(),
        SEGMENT_ELT_DAG_RETRIES="0",
        SEGMENT_ELT_ROLLUPS_EVERY_MINUTES="1440",  # one scheduled run when unpaused, then only the manual ones
    )
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        url = embedded.start(tmp / "pg", server_port=embedded.free_port())
        os.environ["DATABASE_URL"] = url
        with db.connect(url) as conn:
            from segment_elt.control import schema

            schema.upgrade(conn)
            cid = bench_org(conn)
        os.environ["AIRFLOW_PORT"] = str(embedded.free_port())
        with scheduler_stack(url, ROLLUPS) as stack:
            warm = stack.unpause_after_catching_up(ROLLUPS)  # its scheduled run builds the empty tables
            news = []
            for batch in range(2):  # the faster of two, as for the audiences below
                _land(url, cid, batch * EVENTS)
                news.append(stack.trigger_run(ROLLUPS, {}))
            new = min(news, key=lambda r: r.airflow_s)
            idle = stack.trigger_run(ROLLUPS, {})
            _land(url, cid, 2 * EVENTS)
            began = time.monotonic()
            run_dbt(["build"], url)  # the same amount of new data, in-process, no Airflow
            in_process = time.monotonic() - began

            tasks_before = _task_count(stack, ROLLUPS)
            _add_audiences(project)
            run_dbt(["parse", "--quiet"], url)  # the manifest the DAG's tasks are drawn from
            wait_until(
                lambda: _task_count(stack, ROLLUPS) > tasks_before, "the DAG processor did not see the audiences"
            )
            stack.trigger_run(ROLLUPS, {})  # builds the new audience tables
            withs = []
            for batch in range(3, 5):
                _land(url, cid, batch * EVENTS)
                withs.append(stack.trigger_run(ROLLUPS, {}))
            with_audiences = min(withs, key=lambda r: r.airflow_s)
    finally:
        embedded.stop(tmp / "pg", "immediate")
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)
    for name, each in (
        ("warm-up", warm),
        *(("new", r) for r in news),
        ("idle", idle),
        *(("audiences", r) for r in withs),
    ):
        print(
            f"rollups {name}: {each.state} in {each.airflow_s:.1f} s ({len(each.tasks)} tasks); "
            f"{_where_time_goes(each)}"
        )
    ratio = with_audiences.airflow_s / new.airflow_s
    ok = all(r.state == "success" for r in (*news, idle, *withs))
    return [
        Figure(
            f"segment_rollups run, {EVENTS:,} new events (real scheduler, Airflow start to end)",
            new.airflow_s,
            "s",
            f"<= {LIMIT_NEW_S} s",
            ok and new.airflow_s <= LIMIT_NEW_S,
        ),
        Figure("  the same data as a plain in-process dbt build", in_process, "s"),
        Figure("  the run / the in-process build", new.airflow_s / in_process, "x"),
        Figure(
            "segment_rollups run, nothing new (real scheduler)",
            idle.airflow_s,
            "s",
            f"<= {LIMIT_IDLE_S} s",
            ok and idle.airflow_s <= LIMIT_IDLE_S,
        ),
        Figure(
            f"segment_rollups run with {AUDIENCES} more audience models / without",
            ratio,
            "x",
            f"<= {LIMIT_AUDIENCES}",
            ok and ratio <= LIMIT_AUDIENCES,
        ),
    ]
