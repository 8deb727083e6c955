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
        land(
            db,
            acme,
            noon_tracks(days_ago, 2, "Report Created") + noon_tracks(days_ago, 3, "Invite Sent"),
            MIDNIGHT - dt.timedelta(days=days_ago, hours=-13),
            archive_url,
        )
    # an event of 3 days ago received a day late: its receive day must be re-landed for day 3 too
    land(
        db,
        acme,
        noon_tracks(3, 1, "Report Created", user="late"),
        MIDNIGHT - dt.timedelta(days=2, hours=-1),
        archive_url,
    )
    run_dbt(["build"])
    pruned = maintenance.prune(db, archive, RETENTION_DAYS, now=MIDNIGHT)
    assert pruned.deleted_rows == 5 + 6
    run_dbt(["build", "--full-refresh"])  # e.g. after a model change: staging now lacks the pruned rows
    assert sum(v[0] for v in daily(db).values()) == 5

    first = backfill(db, archive, (3, 2, 1))  # receive days 4..2, 3..2 and 2..2 ago
    assert first[0] == {"objects": 11, "already_staged": 0, "events": 11, "new": 11, "failed_keys": []}
    assert first[1:] == [
        first[0] | {"already_staged": 11, "events": 0, "new": 0},
        {"objects": 6, "already_staged": 6, "events": 0, "new": 0, "failed_keys": []},
    ]
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
    for bad, says in (
        (("2026-09-30", "2026-09-01"), "before"),
        (("2026-09-01", None), "both"),
        (("2025-01-01", "2026-09-01"), "at most"),
    ):
        try:
            daily_days.days_of_run(start, start, *bad)
        except daily_days.UserError as exc:
            assert says in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_backfill_runs_share_builds_and_the_days_of_a_failed_build_go_one_per_run(db):
    """What each run of a backfill decides (segment_daily's plan, without Airflow): the first run
    takes the days of the queued runs into its build and those runs end at once; a cleared run
    that already ran rebuilds its day; after a failed build its days go one per run."""
    day = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(9)]
    queued = set(day[1:])

    def attempt(d: dt.date, status: str = "success", most: int = 31) -> str | daily_days.Days:
        """One backfill run of day d: what the plan task decides, its record closed with `status`."""
        run_id = f"backfill__{d}"
        queued.discard(d)
        runs.start_run(
            db,
            daily_days.DAILY,
            run_id,
            "backfill",
            runs.Plan(True, daily_days.Days(d, d).dbt_vars()),
            run_is_live=lambda *_: False,
        )
        if covered_by := daily_days.covering_run(db, run_id, d):
            runs.finish_run(db, daily_days.DAILY, run_id, "skipped", {"rebuilt_by": covered_by})
            return covered_by
        window = daily_days.Days(d - dt.timedelta(days=most - 1), d + dt.timedelta(days=most - 1))
        days = daily_days.backfill_days(d, queued.__contains__, daily_days.failed_days(db, window), most)
        runs.widen_run(
            db, daily_days.DAILY, run_id, days.dbt_vars(), {"covered": [x.isoformat() for x in days if x != d]}
        )
        runs.finish_run(db, daily_days.DAILY, run_id, status)
        return days

    assert attempt(day[0], most=3) == daily_days.Days(day[0], day[2])  # at most 3 days in one build
    assert attempt(day[1]) == attempt(day[2]) == f"backfill__{day[0]}"
    assert attempt(day[1]) == daily_days.Days(day[1], day[1])  # cleared after it ended: its own build
    queued.discard(day[5])  # a gap: day 5's run was not made (--reprocess-behavior none)
    assert attempt(day[3], status="failed") == daily_days.Days(day[3], day[4])
    assert daily_days.failed_days(db, daily_days.Days(day[0], day[8])) == {day[3], day[4]}
    # the failed build covered day 4 but did not succeed: day 4's run rebuilds it, alone
    assert attempt(day[4]) == daily_days.Days(day[4], day[4])
    assert daily_days.failed_days(db, daily_days.Days(day[0], day[8])) == {day[3]}
    assert attempt(day[6]) == daily_days.Days(day[6], day[8])
    assert attempt(day[7]) == attempt(day[8]) == f"backfill__{day[6]}"
    assert attempt(day[3]) == daily_days.Days(day[3], day[3])  # the failed day, cleared: alone, and now it succeeds
    assert daily_days.failed_days(db, daily_days.Days(day[0], day[8])) == set()
    queued.update(day[:3])  # a backfill run backwards (--run-backwards): the earlier days' runs are queued
    assert attempt(day[3]) == daily_days.Days(day[0], day[3])
    statuses = db.execute(
        "select run_id, status, detail->>'rebuilt_by' from control.pipeline_runs"
        " where status = 'skipped' order by started_at"
    ).fetchall()
    assert statuses == [
        (f"backfill__{day[1]}", "skipped", f"backfill__{day[0]}"),
        (f"backfill__{day[2]}", "skipped", f"backfill__{day[0]}"),
        (f"backfill__{day[7]}", "skipped", f"backfill__{day[6]}"),
        (f"backfill__{day[8]}", "skipped", f"backfill__{day[6]}"),
    ]


def test_the_receive_days_follow_dbts_plausibility_window(tmp_path, monkeypatch):
    """The window in which a reported time is believed is set once, as a dbt var: a project that
    believes clocks 3 days ahead re-lands from 3 receive days before the first event day."""
    from segment_elt.settings import settings

    text = (settings().dbt_project_dir / "dbt_project.yml").read_text()
    assert "plausible_days_ahead: 1\n" in text
    (tmp_path / "dbt_project").mkdir()
    (tmp_path / "dbt_project" / "dbt_project.yml").write_text(
        text.replace("plausible_days_ahead: 1\n", "plausible_days_ahead: 3\n")
    )
    days = daily_days.Days(MIDNIGHT.date() - dt.timedelta(days=10), MIDNIGHT.date() - dt.timedelta(days=9))
    assert daily_days.receive_days_to_reland(days, RETENTION_DAYS, now=MIDNIGHT).first == days.first - dt.timedelta(
        days=1
    )
    monkeypatch.setenv("SEGMENT_ELT_PROJECT_DIR", str(tmp_path))
    assert daily_days.receive_days_to_reland(days, RETENTION_DAYS, now=MIDNIGHT).first == days.first - dt.timedelta(
        days=3
    )
