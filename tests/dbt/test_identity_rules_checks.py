"""Mistakes in identity_rules.csv stop the build before any model reads the rules, with one
sentence per bad row naming the file, the row, the rule and the fix; a rule for a connection
that does not exist (yet) only warns."""

from __future__ import annotations

from segment_elt.control import connections
from segment_elt.pipeline.transform import run_dbt
from tests.dbt.harness import copy_project

DEFAULT_ROWS = """*,account,1,groupId,account.external_id
*,contact,1,userId,contact.product_external_user_id
"""
MISTAKES = """*,account,1,groupId,account.external_id
*,account,2,userid,account.ps_id
*,account,3,groupId,account.externalid
*,acount,1,groupId,account.vitally_id
*,contact,1,payload:properties..uid,contact.trait:uid
*,contact,2,email,contact.email
*,contact,2,userId,contact.product_external_user_id
*,contact,,anonymousId,contact.trait:x
,contact,5,userId,contact.trait:y
"""
VALID_SOURCES = "valid sources: groupId, userId, anonymousId, email, payload:<dot.path>"
VALID_TARGETS = (
    "valid targets: account.external_id, account.ps_id, account.vitally_id, account.trait:<key>, "
    "contact.product_external_user_id, contact.email, contact.trait:<key>"
)


def build_with_rules(tmp_path, rows: str):
    project = copy_project(tmp_path)
    (project / "seeds" / "identity_rules.csv").write_text("connection_id,chain,position,source,target\n" + rows)
    results = run_dbt(["build"], project_dir=project, check=False)
    return {r.node.name: str(r.status) for r in results}


def test_each_mistake_is_one_sentence_and_no_model_reads_the_rules(db, tmp_path, capfd):
    connections.create(db, "acme")
    statuses = build_with_rules(tmp_path, MISTAKES)
    printed = capfd.readouterr().out
    for sentence in [
        f"identity_rules.csv row 3 (connection *, account, position 2): unknown source 'userid'; {VALID_SOURCES}",
        f"identity_rules.csv row 4 (connection *, account, position 3): unknown target 'account.externalid'; "
        f"{VALID_TARGETS}",
        "identity_rules.csv row 5 (connection *, acount, position 1): unknown chain 'acount'; "
        "valid chains: account, contact",
        "identity_rules.csv row 6 (connection *, contact, position 1): source 'payload:properties..uid' is not a "
        "payload path; write payload: then the keys separated by single dots, without spaces, "
        "e.g. payload:properties.account_uuid",
        "identity_rules.csv rows 7, 8 (connection *, contact, position 2): these rules share a position, so which "
        "one is tried first is not said; give each rule of a chain its own position",
        "identity_rules.csv row 9 (connection *, contact, position ): the position is empty; give each rule a "
        "whole-number position within its chain",
        "identity_rules.csv row 10 (connection , contact, position 5): the connection_id is empty; write a "
        "connection id, or * for the default rules",
    ]:
        assert sentence in printed
    failed = {name for name, status in statuses.items() if status == "fail"}
    assert {name for name in failed if name.startswith("identity_rule_")} == {
        f"identity_rule_{check}_identity_rules_"
        for check in (
            "connection_ids_are_set",
            "chains_are_known",
            "sources_are_known",
            "targets_are_known",
            "positions_are_set_and_unique",
        )
    }
    assert statuses["int_identity__rules"] == "skipped"
    assert statuses["product_events"] == "skipped"


def test_a_rule_for_a_connection_not_created_yet_warns_and_the_build_goes_on(db, tmp_path, capfd):
    acme = connections.create(db, "acme").connection_id
    statuses = build_with_rules(
        tmp_path, DEFAULT_ROWS + f"{acme},account,1,groupId,account.ps_id\nconn_later,account,1,groupId,account.ps_id\n"
    )
    printed = capfd.readouterr().out
    assert (
        "identity_rules.csv row 5 (connection conn_later, account, position 1): no connection has the id "
        "'conn_later'; these rules apply to no events until it exists (check the id with "
        "`segment-elt connections list`, or use * for the default rules)"
    ) in printed
    assert f"connection {acme}," not in printed
    assert statuses["identity_rule_connections_exist_identity_rules_ref_stg_control__connections_"] == "warn"
    assert statuses["product_events"] == "success"
