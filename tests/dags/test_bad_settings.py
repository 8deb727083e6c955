"""A bad SEGMENT_ELT_* value fails the run's task that reads the settings, saying so in one line
that names the variable; it is never an import error of the DAG files (docs/dags.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.dags.test_dag_integrity import EXPECTED


def test_every_dag_imports_with_a_bad_value_and_the_first_task_names_it(
    airflow_home, database_url, archive_url, monkeypatch, capsys
):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SEGMENT_ELT_RETENTION_DAYS", "a month")
    bag = DagBag()
    assert bag.import_errors == {}
    assert set(bag.dags) >= EXPECTED
    result = bag.dags["segment_maintenance"].test()
    assert result.state == "failed"
    states = {ti.task_id: ti.state for ti in result.get_task_instances()}
    assert states == {"make_partitions": "failed", "prune": "upstream_failed", "vacuum": "upstream_failed"}
    said = "SEGMENT_ELT_RETENTION_DAYS='a month' is not usable: input should be a valid integer"
    assert said in capsys.readouterr().out


def test_a_bad_retries_value_parses_with_the_default(airflow_home, database_url):
    """In a fresh process, as the DAG processor parses: the task defaults are built at import (the
    per-model tasks, which only report the build's result, never retry)."""
    code = (
        "from airflow.dag_processing.dagbag import DagBag; bag = DagBag(); "
        "print(sorted(bag.import_errors),"
        " sorted({t.retries for d in bag.dags.values() for t in d.tasks if not t.start_from_trigger}))"
    )
    env = {**os.environ, "SEGMENT_ELT_DAG_RETRIES": "twice"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[] [2]"
