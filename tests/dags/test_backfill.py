"""Backfills rebuild event days at the grain asked for (segment_daily, docs/dags.md): a 3-day
backfill with one day older than retention, its staged rows pruned and the staging model rebuilt
since, equals a full rebuild over all archived data, and re-running it changes nothing. Planning
and re-landing are plain calls here; tests/dags/test_daily.py runs the DAG itself."""

from __future__ import annotations

import datetime as dt
import json

from segment_elt.control import connections
from segment_elt.ingest.archive import open_archive
from segment_elt.local import samples
from segment_elt.pipeline import daily as daily_days
from segment_elt.pipeline import maintenance, runs
from segment_elt.pipeline.transform import run_dbt
from tests.dags.test_dag_runs import NOW, daily, land

MIDNIGHT = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
RETENTION_DAYS = 1  # with MIDNIGHT as now: rows received 2 or more days ago are past retention


def noon_tracks(days_ago: int, n: int, name: str, user: str = "u") -> list[dict]:
    at = MIDNIGHT - dt.timedelta(days=days_ago) + dt.timedelta(hours=12)
    return [samples.event("track", user_id=f"{user}{i}", name=name, at=at) for i in range(n)]


def backfill(db, archive, days_ago: tuple[int, ...]) -> list[dict]:
    """One run per day, as `airflow backfill create --dag-id segment_daily` makes them."""
    relanded = []
    for n in days_ago:
        start = MIDNIGHT - dt.timedelta(days=n)
        days = daily_days.days_of_run(start, start + dt.timedelta(days=1))
        assert days.count == 1
        receive_days = daily_days.receive_days_to_reland(days, RETENTION_DAYS, now=MIDNIGHT)
        relanded.append(receive_days and daily_days.reland(db, archive, receive_days).as_dict())
        run_dbt(["build", "--vars", json.dumps(days.dbt_vars())])
    return relanded


def test_backfill_with_a_day_past_retention_equals_a_full_rebuild_of_the_archive(db, archive_url):
    archive = open_archive(archive_url)
    acme = connections.create(db, "acme")
    connections.allowlist(db, acme.connection_id, add=["Report Created", "Invite Sent"])
    for days_ago in (3, 2, 1):
        land(db, acme, noon_tracks(days_ago, 2, "Report Created") + noon_tracks(days_ago, 3, "Invite Sent"),
             MIDNIGHT - dt.timedelta(days=days_ago, hours=-13), archive_url)
    # an event of 3 days ago received a day late: its receive day must be re-landed for day 3 too
    land(db, acme, noon_tracks(3, 1, "Report Created", user="late"), MIDNIGHT - dt.timedelta(days=2, hours=-1),
         archive_url)
    run_dbt(["build"])
    pruned = maintenance.prune(db, archive, RETENTION_DAYS, now=MIDNIGHT)
    assert pruned.deleted_rows == 5 + 6
    run_dbt(["build", "--full-refresh"])  # e.g. after a model change: staging now lacks the pruned rows
    assert sum(v[0] for v in daily(db).values()) == 5

    first = backfill(db, archive, (3, 2, 1))  # receive days 4..2, 3..2 and 2..2 ago
    assert first[0] == {"objects": 11, "already_staged": 0, "events": 11, "new": 11, "failed_keys": []}
    assert first[1:] == [first[0] | {"already_staged": 11, "events": 0, "new": 0},
                         {"objects": 6, "already_staged": 6, "events": 0, "new": 0, "failed_keys": []}]
    backfilled = daily(db)
    assert sum(v[0] for v in backfilled.values()) == 16

    again = backfill(db, archive, (3, 2, 1))  # the same backfill again (--reprocess-behavior completed)
    assert daily(db) == backfilled
    assert again[0]["new"] == 0

    everything = daily_days.Days(MIDNIGHT.date() - dt.timedelta(days=4), MIDNIGHT.date())
    daily_days.reland(db, archive, everything)
    run_dbt(["build", "--full-refresh"])
    assert daily(db) == backfilled


def test_rollups_backfill_runs_skip_pointing_at_the_daily_dag(db, airflow_home):
    from airflow.sdk.api.datamodels._generated import DagRunType  # after airflow_home configured Airflow

    day = MIDNIGHT - dt.timedelta(days=3)
    # as a live backfill run hands it to the plan task: the task SDK's enum, not a string
    plan = runs.plan_rollups(db, runs.run_kind(DagRunType.BACKFILL), day, day + dt.timedelta(minutes=10))
    assert not plan.run_dbt
    assert f"airflow backfill create --dag-id segment_daily --from-date {day:%Y-%m-%d}" in plan.reason


def test_days_of_a_run():
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    assert daily_days.settles_at("scheduled", end, now=end) == end + dt.timedelta(minutes=30)
    assert daily_days.settles_at("scheduled", end, now=end + dt.timedelta(minutes=30)) is None
    assert daily_days.settles_at("backfill", end, now=end) is None
    assert daily_days.days_of_run(start, start + dt.timedelta(days=1)) == daily_days.Days(start.date(), start.date())
    ranged = daily_days.days_of_run(start, start + dt.timedelta(days=1), "2026-09-01", "2026-09-30")
    assert (ranged.count, ranged.dbt_vars()) == (30, {"rebuild_from": "2026-09-01", "rebuild_to": "2026-09-30"})
    for bad, says in ((("2026-09-30", "2026-09-01"), "before"), (("2026-09-01", None), "both"),
                      (("2025-01-01", "2026-09-01"), "at most")):
        try:
            daily_days.days_of_run(start, start, *bad)
        except daily_days.UserError as exc:
            assert says in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")
