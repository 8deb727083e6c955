"""The DAG's own figure: wall time of one segment_rollups run (`airflow dags test`) with 10,000 new
events, and with none, on the embedded PostgreSQL and an Airflow home of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_pipeline import _generate
from benchmarks.figures import Figure
from segment_elt import db
from segment_elt.control import connections, schema
from segment_elt.local import embedded
from segment_elt.local.airflow_env import airflow_env

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _dags_test(env: dict) -> float:
    began = time.monotonic()
    subprocess.run([AIRFLOW, "dags", "test", "segment_rollups"], env=env, check=True, capture_output=True)
    return time.monotonic() - began


def run() -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    os.environ.setdefault("SEGMENT_ELT_FERNET_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMTI=")
    try:
        url = embedded.start(tmp / "pg", server_port=embedded.free_port())
        env = {
            **os.environ,
            **airflow_env(f"sqlite:///{tmp}/airflow.db"),
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "DATABASE_URL": url,
        }
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run(
            [sys.executable, "-c", "from segment_elt.pipeline.airflow_dbt import ensure_manifest; ensure_manifest()"],
            env=env,
            check=True,
            capture_output=True,
        )
        with db.connect(url, timeout_s=600) as conn:
            schema.upgrade(conn)
            cid = connections.create(conn, "bench").connection_id
            connections.allowlist(conn, cid, add=["Report Created", "Invite Sent", "Export Downloaded", "$page"])
        _dags_test(env)  # first run builds the (empty) tables
        with db.connect(url, timeout_s=600) as conn:
            _generate(conn, cid, 0, 10_000)
        with_events = _dags_test(env)
        idle = _dags_test(env)
    finally:
        embedded.stop(tmp / "pg", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        Figure(
            "segment_rollups run with 10,000 new events (airflow dags test)",
            with_events,
            "s",
            "<= 90 s",
            with_events <= 90,
        ),
        Figure("segment_rollups run with nothing new (airflow dags test)", idle, "s", "<= 30 s", idle <= 30),
    ]
