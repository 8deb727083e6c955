"""The outbound CLI (write key encrypted at rest, test event) and the dbt outbound models on real marts."""

from __future__ import annotations

import datetime as dt
import json

from segment_elt import cli as segment_elt_cli
from segment_elt.control import connections, entities
from segment_elt.ingest import landing
from segment_elt.local import samples
from segment_elt.outbound import sync
from segment_elt.pipeline.transform import run_dbt
from tests.helpers import free_port
from tests.outbound.conftest import enable
from tests.test_cli import cli


def test_outbound_settings_and_test_event(db, segment, monkeypatch):
    cid = connections.create(db, "acme").connection_id
    missing = cli("connections", "outbound", cid, ok=False)
    assert missing.returncode == 1 and "--write-key is required" in missing.stderr
    cli("connections", "outbound", cid, "--write-key", "wk-secret-123", "--region", "eu")
    stored = db.execute("select write_key_enc, region, enabled from control.outbound").fetchone()
    assert "wk-secret-123" not in stored[0] and stored[1:] == ("eu", True)
    monkeypatch.setenv("SEGMENT_API_URL", f"{segment.url}/eu")
    segment.keys.add("wk-secret-123")
    answer = cli("connections", "outbound-test", cid)
    assert "answered 200" in answer.stdout
    assert segment.messages()[0]["event"] == "Segment ELT Test"
    cli("connections", "outbound", cid, "--disable")
    assert db.execute("select enabled from control.outbound").fetchone()[0] is False
    segment.keys.clear()
    refused = cli("connections", "outbound-test", cid, ok=False)
    assert refused.returncode == 1 and "401" in refused.stdout + refused.stderr


def test_changing_the_region_keeps_a_disabled_sync_disabled(db):
    cid = connections.create(db, "acme").connection_id
    cli("connections", "outbound", cid, "--write-key", "wk-1", "--region", "us", "--disable")
    moved = cli("connections", "outbound", cid, "--region", "eu")
    assert db.execute("select region, enabled from control.outbound").fetchone() == ("eu", False)
    assert "disabled" in moved.stdout
    cli("connections", "outbound", cid, "--enable")
    assert db.execute("select region, enabled from control.outbound").fetchone() == ("eu", True)


def test_outbound_test_exits_non_zero_when_nothing_answers(db, segment, monkeypatch, capsys):
    cid = enable(db, segment, "acme", "wk-1")
    monkeypatch.setenv("SEGMENT_API_URL", f"http://127.0.0.1:{free_port()}")
    assert segment_elt_cli.main(["connections", "outbound-test", cid]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Segment did not answer") and "Traceback" not in err


def test_outbound_models_on_real_marts(db):
    created = connections.create(db, "acme")
    connections.allowlist(db, created.connection_id, add=["Report Created"])
    entities.upsert(
        db,
        "acme",
        entities.ACCOUNTS,
        [
            {
                "account_id": "a1",
                "name": "Acme",
                "external_id": "ext-1",
                "ps_id": "ps-1",
                "vitally_id": None,
                "traits": {},
            },
            {
                "account_id": "a2",
                "name": "Initech",
                "external_id": None,
                "ps_id": "ps-2",
                "vitally_id": None,
                "traits": {},
            },
            {
                "account_id": "a3",
                "name": "Hooli",
                "external_id": "ext-3",
                "ps_id": None,
                "vitally_id": None,
                "traits": {},
            },
        ],
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    events = [
        samples.event("identify", user_id="u1", at=old, traits={"email": "u1@acme.test"}),
        samples.event("group", user_id="u1", group_id="ext-1", at=old),
        samples.event("group", user_id="u1", group_id="ps-1", at=old + dt.timedelta(hours=1)),
        samples.event("group", user_id="u1", group_id="ext-1", at=old - dt.timedelta(hours=1)),
        samples.event("group", user_id="u2", group_id="ps-2", at=old),
    ]
    events += [
        samples.event("track", user_id="u1", name="Report Created", at=old + dt.timedelta(minutes=i)) for i in range(3)
    ]
    for event in events:
        landing.insert_events(
            db,
            connection_id=created.connection_id,
            org_id="acme",
            text=json.dumps(event),
            events=[event],
            received_at=old,
            archive_key="k",
        )
    run_dbt(["build"])
    messages = sync.preview(org_id="acme")
    identify = next(m for m in messages if m["type"] == "identify" and m["userId"] == "u1")
    assert identify["traits"]["account_id"] == "a1"
    groups = {m["anonymousId"]: m for m in messages if m["type"] == "group"}
    # the groupId of the product's most recent group call for the account; none sent: no group call
    assert {k: m["groupId"] for k, m in groups.items()} == {"account:a1": "ps-1", "account:a2": "ps-2"}
    assert "health_score" in groups["account:a1"]["traits"]
    assert db.execute("select group_id from analytics.outbound_group where account_id = 'a3'").fetchone() == (None,)
    assert "Account Went Quiet" in {m["event"] for m in messages if m["type"] == "track"}  # no event for 14 days
