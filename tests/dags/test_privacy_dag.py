"""segment_privacy through dag.test(): it carries out pending deletions end to end, resumes one
that stopped before its rebuild, and does nothing when nothing is pending (docs/dags.md)."""

from __future__ import annotations

from segment_elt.control import privacy
from segment_elt.ingest.archive import open_archive
from segment_elt.pipeline import erasure
from tests.dags.test_dag_runs import NOW, land, run, tracks


def archived(archive_url: str) -> bytes:
    archive = open_archive(archive_url)
    return b"".join(archive.get(key) for key in archive.list(""))


def users_in_marts(db) -> set[str]:
    return {user for (user,) in db.execute("select distinct user_id from analytics.product_events")}


def test_a_pending_deletion_is_carried_out_and_a_stopped_one_finished(dags, db, acme, archive_url):
    land(db, acme, tracks(3, user="alice") + tracks(2, user="bob") + tracks(4, user="carol"), NOW, archive_url)
    run(dags["segment_rollups"])
    assert users_in_marts(db) == {"alice", "bob", "carol"}

    [alice] = privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"], requested_by="dpo@acme")
    assert privacy.status(db)[0]["state"] == "pending"
    run(dags["segment_privacy"])
    [row] = privacy.status(db)
    assert row["regulation_id"] == alice and row["state"] == "done"
    assert (
        row["counts"]["archive_events"] == 3 and row["counts"]["raw_rows"] == 3 and row["counts"]["staging_rows"] == 3
    )
    assert users_in_marts(db) == {"bob", "carol"}
    assert b'"alice"' not in archived(archive_url) and b'"bob"' in archived(archive_url)
    record = db.execute("select status, detail from control.pipeline_runs where dag_id = 'segment_privacy'").fetchone()
    assert record[0] == "success" and record[1]["regulations"] == [alice]

    # bob's deletion stopped after its erasure (a crash before the rebuild): the next run finishes it
    privacy.request(db, "acme", privacy.SUPPRESS_WITH_DELETE, ["bob"])
    with erasure.one_privacy_run(db):
        erasure.erase(db, open_archive(archive_url))
    assert privacy.status(db)[0]["state"] == "rebuilding" and "bob" in users_in_marts(db)
    run(dags["segment_privacy"])
    assert privacy.status(db)[0]["state"] == "done" and users_in_marts(db) == {"carol"}

    # nothing pending: the run erases nothing and skips the rebuild (no run record, no writer role)
    result = run(dags["segment_privacy"])
    states = {ti.task_id: ti.state for ti in result.get_task_instances()}
    assert states == {"erase": "success", "rebuild": "skipped"}
    assert db.execute("select count(*) from control.pipeline_runs where dag_id = 'segment_privacy'").fetchone()[0] == 2


def test_under_the_real_scheduler_a_triggered_run_carries_out_a_pending_deletion(
    database_url, db, acme, archive_url, tmp_path, monkeypatch
):
    """As the page does: a deletion recorded, segment_privacy triggered; the scheduler runs `erase`
    and then `rebuild` in pool segment_dbt, and the regulation ends `done`."""
    from segment_elt.dag_ids import PRIVACY
    from segment_elt.pipeline.transform import run_dbt
    from tests.airflow_stack import scheduler_stack
    from tests.helpers import free_port

    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    monkeypatch.setenv("SEGMENT_ELT_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW_PORT", str(free_port()))
    monkeypatch.setenv("SEGMENT_ELT_DAG_RETRIES", "0")
    # only the run the test triggers: the unpaused DAG's hourly run would otherwise take the deletion
    monkeypatch.setenv("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
    land(db, acme, tracks(3, user="alice") + tracks(2, user="bob"), NOW, archive_url)
    run_dbt(["build"])  # the models as a rollups run leaves them
    [alice] = privacy.request(db, "acme", privacy.DELETE_ONLY, ["alice"])
    with scheduler_stack(database_url, PRIVACY) as stack:
        done = stack.trigger_run(PRIVACY, {}, timeout_s=900)
    assert done.state == "success", done.tasks
    assert done.tasks["erase"][0] == "success" and done.tasks["rebuild"][0] == "success"
    [row] = privacy.status(db)
    assert row["regulation_id"] == alice and row["state"] == "done" and row["counts"]["raw_rows"] == 3
    assert users_in_marts(db) == {"bob"}
    assert b'"alice"' not in archived(archive_url)
