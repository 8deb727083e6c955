"""Suppression through a real receiver: a suppressed person's events are answered 200 and land
nowhere (archive, staging), counted in /metrics and noted in the rejects log; other events of the
same request land byte for byte; unsuppress lands them again; outbound sends nothing about them."""

from __future__ import annotations

import json
import time
from collections import Counter

import requests

from segment_elt.control import connections, privacy
from segment_elt.ingest.archive import open_archive, requests_in
from segment_elt.ingest.receiver.backends import SUPPRESSIONS_TTL_S
from segment_elt.outbound import sync
from tests.receiver.conftest import make_hook
from tests.receiver.test_metrics import scrape


def event(n: int, user: str) -> dict:
    return {"type": "track", "event": "Report Created", "messageId": f"m-{n}", "userId": user}


def staged(db) -> set[str]:
    return {m for (m,) in db.execute("select message_id from raw.segment_events")}


def archived_text(archive_url: str) -> str:
    archive = open_archive(archive_url)
    return "".join(raw.decode() for key in archive.list("") for _, raw in requests_in(key, archive.get(key)))


def test_suppressed_people_are_accepted_and_land_nowhere_until_unsuppressed(db, archive_url, receiver_factory):
    receiver = receiver_factory(workers=1)
    hook = make_hook(db, receiver, rate_limit=1_000_000)
    privacy.request(db, "acme", privacy.SUPPRESS, ["alice"])

    mixed = b'[{"type":"track","event":"A","messageId":"m-1","userId":"alice"},  {"messageId":"m-2","userId":"bob"}]'
    answers = [hook.post(mixed), hook.post(event(3, "alice")), hook.post([event(4, "alice"), event(5, "bob")])]
    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"accepted": 2, "duplicates": 0}),
        (200, {"accepted": 1, "duplicates": 0}),
        (200, {"accepted": 2, "duplicates": 0}),
    ]
    key = connections.create(db, "acme").write_key  # the tracking API (Segment's SDKs) too
    tracked = requests.post(receiver.url + "/v1/track", json=event(6, "alice"), auth=(key, ""), timeout=10)
    assert tracked.status_code == 200
    assert staged(db) == {"m-2", "m-5"}
    archived = archived_text(archive_url)
    assert "alice" not in archived and '{"messageId":"m-2","userId":"bob"}' in archived  # bob's bytes as sent

    figures = scrape(receiver.url)
    assert figures[("segment_elt_receiver_suppressed_events_total", ())] == 4
    assert figures[("segment_elt_receiver_events_total", (("outcome", "landed"),))] == 2
    assert figures.get(("segment_elt_receiver_events_total", (("outcome", "duplicate"),)), 0) == 0
    noted = db.execute("select status, reason from control.rejects where connection_id = %s", (hook.connection_id,))
    assert Counter(status for status, _ in noted) == {200: 1}  # folded within a second, like any reject
    assert db.execute("select reason from control.rejects").fetchone()[0].startswith("suppressed: events of suppressed")

    privacy.request(db, "acme", privacy.UNSUPPRESS, ["alice"])
    time.sleep(SUPPRESSIONS_TTL_S + 0.5)
    assert hook.post(event(7, "alice")).json() == {"accepted": 1, "duplicates": 0}
    assert staged(db) == {"m-2", "m-5", "m-7"}
    assert [row["regulation_type"] for row in privacy.status(db, "acme")] == ["UNSUPPRESS", "SUPPRESS"]


def test_outbound_sends_nothing_about_a_suppressed_person(db):
    created = connections.create(db, "acme")
    db.execute("create schema analytics")
    db.execute("create table analytics.outbound_identify (org_id text, user_id text, traits jsonb)")
    db.execute(
        "insert into analytics.outbound_identify values ('acme', 'alice', %s), ('acme', 'bob', %s)",
        (json.dumps({"account_id": "a1"}), json.dumps({"account_id": "a2"})),
    )
    privacy.request(db, "acme", privacy.SUPPRESS_WITH_DELETE, ["alice"])
    plan = sync.changes(db, created.connection_id, "acme")
    assert [item.key for item in plan.todo] == ["bob"]
    assert plan.skipped == {sync.SUPPRESSED: 1}
