"""segment_daily through dag.test(): a manual run with start_date/end_date rebuilds the range in
one dbt build, re-landing from the archive the day past retention (docs/dags.md)."""

from __future__ import annotations

import datetime as dt

from segment_elt.ingest.archive import open_archive
from segment_elt.pipeline import maintenance
from segment_elt.pipeline.transform import run_dbt
from tests.dags.test_dag_runs import NOW, daily, land, run, tracks


def test_a_range_run_rebuilds_its_days_from_staging_and_the_archive(dags, db, acme, archive_url, monkeypatch):
    monkeypatch.setenv("SEGMENT_ELT_RETENTION_DAYS", "2")
    for days_ago in (3, 2, 1):
        land(db, acme, tracks(3, day_offset=days_ago), NOW - dt.timedelta(days=days_ago), archive_url)
    run_dbt(["build"])
    assert maintenance.prune(db, open_archive(archive_url), 2, now=NOW).deleted_rows == 3  # 3 days ago
    run_dbt(["build", "--full-refresh"])  # staging now lacks that day
    assert sum(v[0] for v in daily(db).values()) == 6

    first, last = (NOW - dt.timedelta(days=3, hours=1)).date(), (NOW - dt.timedelta(days=1, hours=1)).date()
    run(dags["segment_daily"], start_date=first.isoformat(), end_date=last.isoformat())

    assert sum(v[0] for v in daily(db).values()) == 9
    status, detail, dbt_vars = db.execute(
        "select status, detail, dbt_vars from control.pipeline_runs where dag_id = 'segment_daily'"
    ).fetchone()
    assert (status, dbt_vars) == ("success", {"rebuild_from": first.isoformat(), "rebuild_to": last.isoformat()})
    assert detail["days"] == 3
    assert sum(detail["events_per_day"].values()) == 9 and len(detail["events_per_day"]) == 3
    assert (detail["relanded"]["events"], detail["relanded"]["new"]) == (3, 3)
