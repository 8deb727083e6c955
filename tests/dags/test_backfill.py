"""Backfill runs recompute the event days of their interval from what is stored; the result equals
a full rebuild. (The plan is what segment_rollups' first task computes for a backfill run.)"""

from __future__ import annotations

import datetime as dt
import json

from segment_elt.control import connections
from segment_elt.local import samples
from segment_elt.pipeline import runs
from segment_elt.pipeline.transform import run_dbt
from tests.dags.test_dag_runs import NOW, daily, land

MIDNIGHT = NOW.replace(hour=0, minute=0, second=0, microsecond=0)


def noon_tracks(days_ago: int, n: int, name: str) -> list[dict]:
    at = MIDNIGHT - dt.timedelta(days=days_ago) + dt.timedelta(hours=12)
    return [samples.event("track", user_id=f"u{i}", name=name, at=at) for i in range(n)]


def test_backfill_days_equal_a_full_rebuild(db, airflow_home):
    from airflow.sdk.api.datamodels._generated import DagRunType  # after airflow_home configured Airflow

    acme = connections.create(db, "acme")
    connections.allowlist(db, acme.connection_id, add=["Report Created"])
    for days_ago in (3, 2, 1):
        land(db, acme, noon_tracks(days_ago, 2, "Report Created") + noon_tracks(days_ago, 3, "Invite Sent"),
             MIDNIGHT - dt.timedelta(days=days_ago) + dt.timedelta(hours=13))
    run_dbt(["build"])
    connections.allowlist(db, acme.connection_id, add=["Invite Sent"])  # the past days are now stale
    for days_ago in (3, 2, 1):
        day = MIDNIGHT - dt.timedelta(days=days_ago)
        later = runs.plan_rollups(db, "backfill", day + dt.timedelta(minutes=10), day + dt.timedelta(minutes=20))
        assert not later.run_dbt  # only the day's first interval rebuilds it
        # as a live backfill run hands it to the plan task: the task SDK's enum, not a string
        plan = runs.plan_rollups(db, runs.run_kind(DagRunType.BACKFILL), day, day + dt.timedelta(minutes=10))
        assert plan.dbt_vars == {"rebuild_from": day.date().isoformat(), "rebuild_to": day.date().isoformat()}
        run_dbt(["build", "--vars", json.dumps(plan.dbt_vars)])
    backfilled = daily(db)
    run_dbt(["build", "--full-refresh"])
    assert daily(db) == backfilled
    assert sum(v[0] for v in backfilled.values()) == 15
