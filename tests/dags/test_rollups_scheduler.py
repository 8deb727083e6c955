"""segment_rollups under the real scheduler (scheduler, DAG processor, triggerer, API server; LocalExecutor),
as a data engineer sees it in Airflow's UI: one `dbt_build` task builds the project, and each model
and seed has a task of its own that ends as it did in that build without ever going to a worker.
A bad identity_rules row fails the run: the rules' task fails with the sentence naming the row, the
models downstream are skipped, and the alert names the check and the row in one line."""

from __future__ import annotations

import shutil
import threading

from segment_elt.dag_ids import ROLLUPS
from segment_elt.settings import settings
from tests.airflow_stack import scheduler_stack, wait_until
from tests.dags.test_alerts import Webhook
from tests.dags.test_dag_runs import NOW, land, total_events, tracks
from tests.helpers import free_port

BAD_RULES = (
    "connection_id,chain,position,source,target\n"
    "*,account,1,groupId,account.external_id\n"
    "*,account,2,userid,account.ps_id\n"
)


def _copy_project(to):
    for part in ("dags", "plugins", "dbt_project"):
        shutil.copytree(
            settings().project_dir / part, to / part, ignore=shutil.ignore_patterns("target", "logs", "__pycache__")
        )
    return to


def test_one_build_per_run_with_per_model_tasks_and_a_failed_check_named(
    database_url, db, acme, archive_url, tmp_path, monkeypatch
):
    project = _copy_project(tmp_path / "project")
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    monkeypatch.setenv("SEGMENT_ELT_PROJECT_DIR", str(project))
    monkeypatch.setenv("SEGMENT_ELT_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW_PORT", str(free_port()))
    monkeypatch.setenv("SEGMENT_ELT_DAG_RETRIES", "0")
    monkeypatch.setenv("SEGMENT_ELT_ROLLUPS_EVERY_MINUTES", "1440")
    monkeypatch.setenv("SEGMENT_ELT_ALERT_WEBHOOK_URL", webhook.url)
    land(db, acme, tracks(3), NOW)
    try:
        with scheduler_stack(database_url, ROLLUPS) as stack:
            good = stack.unpause_after_catching_up(ROLLUPS, timeout_s=600)
            assert good.state == "success", good.tasks
            assert total_events(db) == 3
            models = {task: state for task, (state, _) in good.tasks.items() if task.startswith("dbt.")}
            assert {"dbt.staging.stg_segment__events", "dbt.marts.product_events", "dbt.seeds.identity_rules"} <= set(
                models
            )
            assert set(models.values()) == {"success"}
            with stack_db(stack) as meta:  # the model tasks never went to the executor
                queued = meta.execute(
                    "select count(*) from task_instance where run_id = %s and task_id like 'dbt.%%'"
                    " and (queued_dttm is not null or pid is not null)",
                    (good.run_id,),
                ).fetchone()[0]
            assert queued == 0

            (project / "dbt_project" / "seeds" / "identity_rules.csv").write_text(BAD_RULES)
            land(db, acme, tracks(2, user="u2"), NOW)
            bad = stack.trigger_run(ROLLUPS, {}, timeout_s=600)
            # the DAG's failure callback runs in the DAG processor, after the run has ended
            (alert,) = wait_until(
                lambda: [a for a in webhook.received if a["run_id"] == bad.run_id and a["status"] == "failed"],
                "no failure alert for the bad run",
                300,
            )
    finally:
        webhook.shutdown()

    assert bad.state == "failed"
    assert bad.tasks["dbt_build"][0] == "failed"
    assert bad.tasks["dbt.seeds.identity_rules"][0] == "failed"
    assert bad.tasks["dbt.marts.product_events"][0] == "skipped"
    assert bad.tasks["dbt.staging.stg_segment__events"][0] == "success"
    assert total_events(db) == 3  # nothing downstream of the check was built
    assert alert["reason"].startswith("dbt build failed: test identity_rule_sources_are_known_identity_rules_: ")
    assert "identity_rules.csv row 3 (connection *, account, position 2): unknown source 'userid'" in alert["reason"]
    reason = db.execute(
        "select detail->>'reason' from control.pipeline_runs where run_id = %s", (bad.run_id,)
    ).fetchone()[0]
    assert reason == alert["reason"]


def stack_db(stack):
    from segment_elt import db

    return db.connect(stack.metadata_url)
