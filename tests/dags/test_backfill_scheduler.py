"""A segment_daily backfill run by the real scheduler, as a data engineer starts one
(docs/dags.md#backfills): `airflow backfill create` makes a run per day, the first run rebuilds
every day in one dbt build (re-landing the day past retention from the archive), the other runs
end at once naming it; `--reprocess-behavior completed` clears them all and does it again, with
the same marts (a cleared run that already ran is not taken for rebuilt by the build before)."""

from __future__ import annotations

import datetime as dt

from segment_elt.ingest.archive import open_archive
from segment_elt.pipeline import maintenance
from segment_elt.pipeline.dag_ids import DAILY
from segment_elt.pipeline.transform import run_dbt
from tests.airflow_stack import scheduler_stack
from tests.dags.test_dag_runs import NOW, daily, land, tracks
from tests.helpers import free_port


def test_a_backfill_by_the_scheduler_rebuilds_its_days_in_one_build(database_url, db, acme, archive_url, tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)  # the stack's own, not the DAG tests'
    monkeypatch.setenv("SEGMENT_ELT_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW_PORT", str(free_port()))
    monkeypatch.setenv("SEGMENT_ELT_RETENTION_DAYS", "2")
    for days_ago in (3, 2, 1):
        land(db, acme, tracks(3, day_offset=days_ago), NOW - dt.timedelta(days=days_ago), archive_url)
    run_dbt(["build"])
    assert maintenance.prune(db, open_archive(archive_url), 2, now=NOW).deleted_rows == 3  # 3 days ago
    run_dbt(["build", "--full-refresh"])  # staging now lacks that day
    assert sum(v[0] for v in daily(db).values()) == 6
    first, last = (NOW - dt.timedelta(days=3, hours=1)).date(), (NOW - dt.timedelta(days=1, hours=1)).date()
    days = [first + dt.timedelta(days=i) for i in range(3)]

    with scheduler_stack(database_url, DAILY) as stack:
        stack.backfill(DAILY, first, last, timeout_s=600)
        assert {day: state for day, (state, _, _) in stack.runs(DAILY).items()} == dict.fromkeys(days, "success")
        tasks = stack.task_states(DAILY)
        assert [tasks[(day, "dbt_build")] for day in days] == ["success", "skipped", "skipped"]
        records = db.execute("select run_id, status, dbt_vars, detail from control.pipeline_runs"
                             " where dag_id = %s order by started_at", (DAILY,)).fetchall()
        builder = records[0][0]
        assert [r[1] for r in records] == ["success", "skipped", "skipped"]
        assert records[0][2] == {"rebuild_from": first.isoformat(), "rebuild_to": last.isoformat()}
        assert records[0][3]["covered"] == [days[1].isoformat(), days[2].isoformat()]
        assert records[0][3]["relanded"]["new"] == 3  # the day past retention, from the archive
        assert [r[3]["rebuilt_by"] for r in records[1:]] == [builder, builder]
        backfilled = daily(db)
        assert sum(v[0] for v in backfilled.values()) == 9

        stack.backfill(DAILY, first, last, "--reprocess-behavior", "completed", timeout_s=600)
        assert {day: (state, clears) for day, (state, _, clears) in stack.runs(DAILY).items()} == dict.fromkeys(
            days, ("success", 1))
        again = db.execute("select status, detail from control.pipeline_runs where dag_id = %s"
                           " order by started_at offset 3", (DAILY,)).fetchall()
        assert [status for status, _ in again] == ["success", "skipped", "skipped"]
        assert again[0][1]["relanded"]["new"] == 0  # re-landing is idempotent
        # the same run, cleared, rebuilt the days again: its new build covers the others' new attempts
        assert [detail["rebuilt_by"] for _, detail in again[1:]] == [builder, builder]
    assert daily(db) == backfilled
