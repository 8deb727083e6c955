"""segment_daily backfills run by the real scheduler, as a data engineer starts them
(docs/dags.md#backfills): `airflow backfill create` makes a run per day and the first run
rebuilds the queued days in its own build. Here that build fails (an archived object of the day
past retention no longer reads back intact), so the other days go one per run and the bad day
fails alone; once the object is restored, `--reprocess-behavior failed` rebuilds that day; then
`--reprocess-behavior completed` rebuilds all three in one build again (a cleared run is never
taken for rebuilt by the build before), with the same marts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from segment_elt.dag_ids import DAILY
from segment_elt.ingest.archive import object_key, open_archive
from segment_elt.local import samples
from segment_elt.pipeline import maintenance
from segment_elt.pipeline.transform import run_dbt
from tests.airflow_stack import scheduler_stack
from tests.dags.test_dag_runs import NOW, daily, land, tracks
from tests.helpers import free_port


def records(db, offset: int) -> list[tuple]:
    """(status, dbt_vars, detail) of segment_daily's run records, oldest first, from `offset`."""
    return db.execute(
        "select status, dbt_vars, detail from control.pipeline_runs where dag_id = %s order by started_at offset %s",
        (DAILY, offset),
    ).fetchall()


def test_backfills_by_the_scheduler_share_builds_and_a_bad_day_fails_alone(
    database_url, db, acme, archive_url, tmp_path, monkeypatch
):
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)  # the stack's own, not the DAG tests'
    monkeypatch.setenv("SEGMENT_ELT_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW_PORT", str(free_port()))
    monkeypatch.setenv("SEGMENT_ELT_RETENTION_DAYS", "2")
    monkeypatch.setenv("SEGMENT_ELT_DAG_RETRIES", "0")
    for days_ago in (3, 2, 1):
        land(db, acme, tracks(3, day_offset=days_ago), NOW - dt.timedelta(days=days_ago), archive_url)
    # an event of 3 days ago received a day late, i.e. on a receive day only day 3's rebuild re-lands
    late = samples.event(
        "track", user_id="late", group_id="acme-ext", name="Report Created", at=NOW - dt.timedelta(days=3, hours=1)
    )
    late_at = NOW - dt.timedelta(days=4)
    land(db, acme, [late], late_at, archive_url)
    run_dbt(["build"])
    assert maintenance.prune(db, open_archive(archive_url), 2, now=NOW).deleted_rows == 4
    run_dbt(["build", "--full-refresh"])  # staging now lacks days 3 and 4 ago
    assert sum(v[0] for v in daily(db).values()) == 6
    late_object = Path(archive_url.removeprefix("file://")) / object_key(
        "", acme.org_id, acme.connection_id, late_at, json.dumps(late).encode()
    )
    intact = late_object.read_bytes()
    late_object.write_bytes(intact.replace(b"late", b"lost"))
    first, last = (NOW - dt.timedelta(days=3, hours=1)).date(), (NOW - dt.timedelta(days=1, hours=1)).date()
    days = [first + dt.timedelta(days=i) for i in range(3)]

    with scheduler_stack(database_url, DAILY) as stack:
        stack.backfill(DAILY, first, last, timeout_s=600)
        assert {day: state for day, (state, _, _) in stack.runs(DAILY).items()} == {
            days[0]: "failed",
            days[1]: "success",
            days[2]: "success",
        }
        assert stack.task_states(DAILY)[(days[0], "plan")] == "failed"  # re-landing: the object is not intact
        failed, *alone = records(db, 0)
        assert failed[0] == "failed"
        assert failed[1] == {"rebuild_from": first.isoformat(), "rebuild_to": last.isoformat()}
        assert failed[2]["covered"] == [days[1].isoformat(), days[2].isoformat()]
        # the failed build's other days were each rebuilt by their own run
        assert [(status, dbt_vars["rebuild_from"]) for status, dbt_vars, _ in alone] == [
            ("success", days[1].isoformat()),
            ("success", days[2].isoformat()),
        ]
        assert sum(v[0] for v in daily(db).values()) == 9  # day 2's build re-landed day 3's own receive day

        late_object.write_bytes(intact)
        stack.backfill(DAILY, first, last, "--reprocess-behavior", "failed", timeout_s=600)
        assert {day: (state, clears) for day, (state, _, clears) in stack.runs(DAILY).items()} == {
            days[0]: ("success", 1),
            days[1]: ("success", 0),
            days[2]: ("success", 0),
        }
        [retried] = records(db, 3)
        assert (retried[0], retried[1]["rebuild_to"], retried[2]["relanded"]["new"]) == (
            "success",
            days[0].isoformat(),
            1,
        )  # day 3 alone: the late event, now intact
        backfilled = daily(db)
        assert sum(v[0] for v in backfilled.values()) == 10

        stack.backfill(DAILY, first, last, "--reprocess-behavior", "completed", timeout_s=600)
        assert {day: (state, clears) for day, (state, _, clears) in stack.runs(DAILY).items()} == {
            days[0]: ("success", 2),
            days[1]: ("success", 1),
            days[2]: ("success", 1),
        }
        tasks = stack.task_states(DAILY)
        assert [tasks[(day, "dbt_build")] for day in days] == ["success", "skipped", "skipped"]
        builder, *ended = records(db, 4)
        assert (builder[0], builder[1]["rebuild_from"], builder[1]["rebuild_to"]) == (
            "success",
            first.isoformat(),
            last.isoformat(),
        )
        assert builder[2]["relanded"]["new"] == 0  # re-landing is idempotent
        run_id = db.execute(
            "select run_id from control.pipeline_runs where dag_id = %s order by started_at desc offset 2 limit 1",
            (DAILY,),
        ).fetchone()[0]
        assert [(status, detail["rebuilt_by"]) for status, _, detail in ended] == [("skipped", run_id)] * 2
    assert daily(db) == backfilled
