"""`segment-elt pipeline run-once`: the real segment_rollups DAG once, in the CLI's process; its exit
status is the run's outcome and it prints the run's figures."""

from __future__ import annotations

import json

from segment_elt import cli
from tests.dags.test_dag_runs import NOW, land, total_events, tracks


def test_run_once_builds_the_marts_and_prints_the_runs_figures(dags, db, acme, capsys):
    land(db, acme, tracks(4), NOW)
    assert cli.main(["pipeline", "run-once", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)  # the task logs went to stderr
    assert figures["state"] == "success" and figures["recorded_status"] == "success"
    assert figures["staged_rows"] == 4 and figures["marts"]["product_events"] == 4
    assert total_events(db) == 4


def test_run_once_exits_1_when_the_run_fails(dags, db, acme, capsys):
    land(db, acme, tracks(2), NOW)
    db.execute("alter table control.allowlist rename to allowlist_moved")
    assert cli.main(["pipeline", "run-once"]) == 1
    assert "segment_rollups ended failed" in capsys.readouterr().err
