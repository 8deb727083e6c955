"""Security: secrets never in plain text anywhere, constant-time checks, no cross-org matches, no SQL injection."""

from __future__ import annotations

import datetime as dt
import inspect
import json

import pytest
import requests

from segment_elt.control import connections, crypto, entities
from segment_elt.ingest import landing, signing
from segment_elt.local import samples
from segment_elt.pipeline.transform import DbtFailed, run_dbt
from tests.dbt.harness import copy_project, write_rules
from tests.receiver.conftest import make_hook


def test_secrets_never_in_logs_responses_or_database(db, archive_url, receiver_factory):
    receiver = receiver_factory()
    hook = make_hook(db, receiver)
    db.execute(
        "insert into control.outbound (connection_id, write_key_enc, region) values (%s, %s, 'us')",
        (hook.connection_id, crypto.encrypt("wk-very-secret")),
    )
    answers = [
        hook.post(samples.event("track", user_id="u1")),
        hook.post(samples.event("track"), secret="wrong"),
        requests.get(f"{receiver.url}/readyz"),
    ]
    for answer in answers:
        assert hook.secret not in answer.text
    dump = " ".join(
        str(row)
        for table in ("control.connections", "control.outbound", "control.orgs")
        for row in db.execute(f"select * from {table}").fetchall()
    )
    assert hook.secret not in dump and "wk-very-secret" not in dump
    receiver.stop()
    log = receiver.log.read_text()
    assert hook.connection_id in log and hook.secret not in log and "X-Signature" not in log


def test_signature_comparison_is_constant_time():
    source = inspect.getsource(signing.verify)
    assert "hmac.compare_digest" in source and "==" not in source


def test_identity_never_crosses_orgs_even_when_ids_collide(db):
    a = connections.create(db, "org-a")
    connections.create(db, "org-b")
    connections.allowlist(db, a.connection_id, add=["Login"])
    entities.upsert(
        db,
        "org-b",
        entities.ACCOUNTS,
        [dict(account_id="b-acct", name="B", external_id="shared-id", ps_id="shared-id", vitally_id=None, traits={})],
    )
    entities.upsert(
        db,
        "org-b",
        entities.CONTACTS,
        [dict(contact_id="b-con", account_id="b-acct", email="x@y.test", product_external_user_id="u1", traits={})],
    )
    event = samples.event("track", user_id="u1", name="Login", group_id="shared-id", traits={"email": "x@y.test"})
    landing.insert_events(
        db,
        connection_id=a.connection_id,
        org_id="org-a",
        text=json.dumps(event),
        events=[event],
        received_at=dt.datetime.now(dt.UTC),
        archive_key="k",
    )
    run_dbt(["build"])
    assert db.execute("select account_id, contact_id from analytics.product_events").fetchall() == [(None, None)]


def test_cli_and_identity_rule_inputs_cannot_inject_sql(db, tmp_path):
    created = connections.create(db, "acme")
    hostile = "x'); drop table app.accounts; --"
    connections.allowlist(db, created.connection_id, add=[hostile])
    assert connections.allowlist(db, created.connection_id) == [hostile]
    project = copy_project(tmp_path)
    # a trait key may hold anything: the models run with it
    write_rules(
        project,
        [
            dict(
                connection_id=created.connection_id,
                chain="account",
                position=1,
                source="payload:properties.x",
                target="account.trait:" + hostile,
            )
        ],
        {},
    )
    run_dbt(["build"], project_dir=project)
    assert db.execute("select to_regclass('app.accounts')").fetchone()[0] is not None
    # a payload path may not: the rules file's own checks refuse it, harmlessly
    write_rules(
        project,
        [
            dict(
                connection_id=created.connection_id,
                chain="account",
                position=1,
                source=f"payload:{hostile}",
                target="account.trait:" + hostile,
            )
        ],
        {},
    )
    with pytest.raises(DbtFailed, match="identity_rule_sources_are_known"):
        run_dbt(["build"], project_dir=project)
    assert db.execute("select to_regclass('app.accounts')").fetchone()[0] is not None
    assert db.execute("select count(*) from control.allowlist").fetchone()[0] == 1
