"""One `dbt build` per run, each node's result recorded (segment_elt.pipeline.dbt_build), against the
embedded PostgreSQL and real dbt: what failed is named in one line with dbt's own message and the
sentences the check printed; nothing downstream of it is built; a retry rebuilds only what did not
succeed; in-process dbt never rewrites the manifest the DAGs load."""

from __future__ import annotations

import pytest

from segment_elt.control import connections
from segment_elt.pipeline import dbt_build, freshness
from segment_elt.pipeline.transform import DbtFailed, run_dbt
from segment_elt.settings import settings
from tests.dags.test_dag_runs import NOW, land, tracks
from tests.dbt.harness import copy_project


@pytest.fixture(scope="module", autouse=True)
def _project_manifest(pg_server):
    run_dbt(["parse", "--quiet"], pg_server.url())  # the manifest the DAGs load


BAD_SOURCE = "*,account,1,groupId,account.external_id\n*,account,2,userid,account.ps_id\n"


def _manifest(project):
    run_dbt(["parse", "--quiet"], project_dir=project)
    return project / "target" / "manifest.json"


def _node(manifest, name: str) -> list[str]:
    (node,) = [n for n in dbt_build.project_nodes(manifest) if n.name == name]
    return [node.unique_id, *node.tests]


def test_a_failed_check_is_named_with_its_sentence_and_nothing_downstream_is_built(db, tmp_path):
    connections.create(db, "acme")
    project = copy_project(tmp_path)
    (project / "seeds" / "identity_rules.csv").write_text("connection_id,chain,position,source,target\n" + BAD_SOURCE)
    manifest = _manifest(project)

    with pytest.raises(DbtFailed) as failed:
        dbt_build.build("segment_rollups", "manual__1", 1, {}, manifest, project_dir=project)

    line = str(failed.value)
    assert "\n" not in line
    assert line.startswith("dbt build failed: test identity_rule_sources_are_known_identity_rules_: ")
    assert "identity_rules.csv row 3 (connection *, account, position 2): unknown source 'userid'" in line
    assert "Got 1 result" in line  # dbt's own message, after the sentence naming the row
    results, state = dbt_build.run_state(db, "segment_rollups", "manual__1")
    assert state == "failed"
    statuses = {uid.split(".")[-1] if uid.startswith("model") else uid: r[0] for uid, r in results.items()}
    assert statuses["stg_segment__events"] == "success"  # not downstream of the rules: built
    assert statuses["int_identity__rules"] == statuses["product_events"] == "skipped"
    assert db.execute("select to_regclass('analytics.product_events')").fetchone()[0] is None

    seed = dbt_build.node_verdict(results, state, _node(manifest, "identity_rules"))
    assert seed.state == "failed" and any("unknown source 'userid'" in line for line in seed.lines)
    assert dbt_build.node_verdict(results, state, _node(manifest, "product_events")).state == "skipped"
    assert dbt_build.node_verdict(results, state, _node(manifest, "stg_segment__events")).state == "success"


def test_a_retry_rebuilds_only_what_did_not_succeed_and_ends_as_a_whole_build(db, acme):
    land(db, acme, tracks(4), NOW)
    manifest = settings().dbt_project_dir / "target" / "manifest.json"
    db.execute("alter table control.allowlist rename to allowlist_moved")  # a transient fault
    with pytest.raises(DbtFailed, match=r"^dbt build failed: model stg_control__allowlist: "):
        dbt_build.build("segment_rollups", "manual__2", 1, {}, manifest)
    db.execute("alter table control.allowlist_moved rename to allowlist")

    done = dbt_build.build("segment_rollups", "manual__2", 2, {}, manifest)

    assert "stg_segment__events" not in done["selected"]  # built by the first attempt
    assert {"stg_control__allowlist", "product_events", "account_event_daily"} <= set(done["selected"])
    assert db.execute("select count(*) from analytics.product_events").fetchone()[0] == 4
    assert db.execute("select sum(event_count) from analytics.account_event_daily").fetchone()[0] == 4
    results, state = dbt_build.run_state(db, "segment_rollups", "manual__2")
    assert state == "success"
    assert {r[0] for r in results.values()} <= dbt_build.SUCCEEDED
    assert results["model.segment_elt.stg_segment__events"][2] == 1  # its result is the first attempt's


def test_an_attempt_with_nothing_left_to_rebuild_builds_nothing(db, acme):
    manifest = settings().dbt_project_dir / "target" / "manifest.json"
    dbt_build.build("segment_daily", "manual__3", 1, {}, manifest)
    assert dbt_build.build("segment_daily", "manual__3", 2, {}, manifest) == {"nodes": 0, "selected": []}


def test_in_process_dbt_never_rewrites_the_manifest_the_dags_load(db, acme):
    manifest = settings().dbt_project_dir / "target" / "manifest.json"
    before = manifest.read_bytes()
    land(db, acme, tracks(1), NOW)
    freshness.check()
    run_dbt(["build"])
    assert manifest.read_bytes() == before


def test_verdicts_of_a_node_and_its_tests():
    built, failed_test, skipped = ("success", None, 1), ("fail", "Got 2 results", 1), ("skipped", None, 1)
    node = ["model.p.m", "test.p.unique_m.1", "test.p.not_null_m.2"]
    assert dbt_build.node_verdict({node[0]: built, node[1]: ("pass", None, 1)}, "success", node).state == "success"
    verdict = dbt_build.node_verdict({node[0]: built, node[1]: failed_test}, "failed", node)
    assert verdict.state == "failed" and verdict.lines[0] == "test unique_m: fail: Got 2 results (attempt 1)"
    assert dbt_build.node_verdict({node[0]: skipped}, "failed", node).state == "skipped"
    assert dbt_build.node_verdict({}, "failed", node).state == "skipped"  # the build failed before it
    assert dbt_build.node_verdict({}, "success", node).state == "success"  # not selected by a retry
    stopped = dbt_build.node_verdict({node[0]: ("running", None, 2)}, "failed", node)
    assert stopped.state == "failed" and "stopped while running it" in stopped.lines[0]
